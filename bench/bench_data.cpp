// Episode sampling throughput from a pack (issue goal: >= 2,000 episodes/s at k = 3, 128^2, on 2
// cores). Needs a training pack: SEGICL_PACK=runs/train128.pack bench_data. Reports episodes/s.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

#include "segicl/core/runtime.h"
#include "segicl/data/episodes.h"

namespace {

std::shared_ptr<const segicl::data::Pack> pack() {
  static std::shared_ptr<const segicl::data::Pack> cached;
  if (!cached) {
    const char* path = std::getenv("SEGICL_PACK");
    cached = segicl::data::Pack::open(path ? path : "runs/train128.pack");
  }
  return cached;
}

void BM_SampleEpisodes(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(2)));
  segicl::data::EpisodeOptions options;
  options.min_context = options.max_context = static_cast<int>(state.range(0));
  options.augment = state.range(1) != 0;
  segicl::data::EpisodeSampler sampler(pack(), options, 1);
  const int batch = 32;
  for (auto _ : state) benchmark::DoNotOptimize(sampler.sample(batch));
  state.counters["episodes_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()) * batch, benchmark::Counter::kIsRate);
}
// Args: k, augment, threads.
BENCHMARK(BM_SampleEpisodes)->Args({3, 1, 2})->Args({3, 0, 2})->Args({8, 1, 2})->Args({3, 1, 1})->Unit(benchmark::kMillisecond)->UseRealTime();

// The batches of scripts/gpu-train.sh's crossconv run (64 episodes, k in [0, 8], 30 % empty
// queries) sampled on the host or on a CUDA device (EpisodeSampler::compute_on). Session 12's GPU
// run trained at ~1.6 of these per second on 16 cores. Args: on CUDA (0/1), threads.
void BM_SampleGpuRunBatch(benchmark::State& state) {
  const bool cuda = state.range(0) != 0;
  if (cuda && !torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  at::set_num_threads(static_cast<int>(state.range(1)));
  segicl::data::EpisodeOptions options;
  options.min_context = 0;
  options.max_context = 8;
  options.empty_query_fraction = 0.3;
  segicl::data::EpisodeSampler sampler(pack(), options, 1);
  if (cuda) sampler.compute_on(torch::kCUDA);
  const int batch = 64;
  for (auto _ : state) {
    auto episodes = sampler.sample(batch);
    if (cuda) episodes.query_images.sum().item<float>();  // wait for the device's queued work
    benchmark::DoNotOptimize(episodes);
  }
  state.counters["episodes_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()) * batch, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SampleGpuRunBatch)->Args({0, 2})->Args({0, 1})->Args({1, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// As the CLI starts a batch job (SEGICL_MALLOC_DEFAULTS=1 measures glibc's defaults instead).
int main(int argc, char** argv) {
  segicl::runtime::reuse_large_blocks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
