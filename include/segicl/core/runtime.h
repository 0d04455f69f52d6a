// Process start-up for every segicl program: thread count and a BLAS sanity check. LibTorch on
// Debian starts with 1 intra-op thread and silently uses reference BLAS (~30x slower) when
// OpenBLAS is missing (measured, docs TOOLCHAIN.md); both are fixed or reported here.
#pragma once

namespace segicl::runtime {

// Sets LibTorch's intra-op threads to `threads` (0 = all hardware threads). Call once, first.
void set_threads(int threads);

// Keeps freed tensor memory in the process for reuse instead of mapping and unmapping it per op.
// glibc serves blocks above its mmap threshold (at most 32 MiB when it adapts) with fresh mmaps,
// and a training batch's tensors are 30-40 MiB each ([64, 9, 1, 128, 128] float32): the kernel's
// page-fault work was 39 % of the episode sampler's time (perf, session 13). Measured on 1 thread:
// sampling 48 -> 78 episodes/s, CPU training 0.34 -> 0.43 steps/s, a CHAOS volume segmented in
// 3.9 -> 3.4 s, for +9-30 % peak memory. Not for the server (its memory is kept low on purpose).
// An operator's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / GLIBC_TUNABLES setting wins;
// SEGICL_MALLOC_DEFAULTS=1 keeps glibc's own behaviour (to measure the difference).
void reuse_large_blocks();

// Times a 512x512 fp32 matmul; returns GFLOP/s and logs a loud warning below 10 GFLOP/s, with the
// hint to install libopenblas0-pthread. Costs a few milliseconds.
double check_blas_speed();

}  // namespace segicl::runtime
