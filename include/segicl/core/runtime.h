// Process start-up for every segicl program: thread count and a BLAS sanity check. LibTorch on
// Debian starts with 1 intra-op thread and silently uses reference BLAS (~30x slower) when
// OpenBLAS is missing (measured, docs TOOLCHAIN.md); both are fixed or reported here.
#pragma once

namespace segicl::runtime {

// Sets LibTorch's intra-op threads to `threads` (0 = all hardware threads). Call once, first.
void set_threads(int threads);

// Times a 512x512 fp32 matmul; returns GFLOP/s and logs a loud warning below 10 GFLOP/s, with the
// hint to install libopenblas0-pthread. Costs a few milliseconds.
double check_blas_speed();

}  // namespace segicl::runtime
