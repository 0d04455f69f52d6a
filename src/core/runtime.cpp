// Start-up checks: LibTorch thread count and BLAS speed (see runtime.h for why).
#include "segicl/core/runtime.h"

#include <torch/torch.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "segicl/core/log.h"

namespace segicl::runtime {

void set_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  log::get("core")->debug("intra-op threads: {}", at::get_num_threads());
}

void reuse_large_blocks() {
#if defined(__GLIBC__)
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("SEGICL_MALLOC_DEFAULTS") || std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      (tunables && (std::strstr(tunables, "mmap_threshold") || std::strstr(tunables, "trim_threshold"))))
    return;
  constexpr int kOneGiB = 1 << 30;
  // Both: a high mmap threshold puts large blocks on the heap, a high trim threshold keeps the
  // heap's free top (where they were) instead of handing it back to the kernel at every free.
  const bool set = mallopt(M_MMAP_THRESHOLD, kOneGiB) == 1 && mallopt(M_TRIM_THRESHOLD, kOneGiB) == 1;
  log::get("core")->debug("large blocks kept on the heap for reuse: {}", set ? "yes" : "refused by malloc");
#endif
}

double check_blas_speed() {
  torch::NoGradGuard no_grad;
  auto a = torch::rand({512, 512});
  auto b = torch::rand({512, 512});
  torch::mm(a, b);  // warm-up: first call loads the BLAS library
  const int repeats = 4;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) torch::mm(a, b);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double gflops = repeats * 2.0 * 512 * 512 * 512 / seconds / 1e9;
  if (gflops < 10.0) {  // reference BLAS: ~5; OpenBLAS: 130+ idle, ~20 when the other core is busy
    log::get("core")->warn(
        "matrix multiply runs at {:.1f} GFLOP/s: LibTorch is probably on the reference BLAS "
        "(expected >100 GFLOP/s). Install libopenblas0-pthread (scripts/install-deps.sh).",
        gflops);
  } else {
    log::get("core")->debug("BLAS check: {:.0f} GFLOP/s", gflops);
  }
  return gflops;
}

}  // namespace segicl::runtime
