// Episode sampling throughput from a pack (issue goal: >= 2,000 episodes/s at k = 3, 128^2, on 2
// cores). Needs a training pack: SEGICL_PACK=runs/train128.pack bench_data. Reports episodes/s.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

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

}  // namespace

BENCHMARK_MAIN();
