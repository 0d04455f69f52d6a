// End-to-end segmentation latency of the shipped model on 2 cores (issue 5's speed section): one 2D
// slice at k = 0, 1, 3, 8 and a 100-slice volume at k = 3, through infer::Segmenter (preprocess,
// model, map back to the grid). Inputs are the bundled CHAOS samples: the query is patient p02
// (one axial plane of it, or its volume resampled to 100 slices by repeating planes), the examples
// come from p01's liver. Model: $SEGICL_MODEL or models/segicl-crossconv-wise.pt. Peak RSS is printed
// by /usr/bin/time around the binary (see reports/bench/README.md).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <memory>

#include "segicl/infer/segmenter.h"
#include "segicl/io/volume.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace {

using segicl::infer::Example;
using segicl::infer::Segmenter;
using segicl::io::Volume;

const std::string kSamples = std::string(SEGICL_SOURCE_DIR) + "/data/samples/chaos_mr_t2/";

const Segmenter& segmenter() {
  static std::unique_ptr<Segmenter> cached = [] {
    const char* path = std::getenv("SEGICL_MODEL");
    return std::make_unique<Segmenter>(path ? path : std::string(SEGICL_SOURCE_DIR) + "/models/segicl-crossconv-wise.pt");
  }();
  return *cached;
}

const Example& liver_example() {
  static const Example example = [] {
    Example e;
    e.image = segicl::io::read_image(kSamples + "images/chaos_mr_t2_p01.nii.gz");
    e.labels = segicl::io::read_labels(kSamples + "labels/chaos_mr_t2_p01.nii.gz");
    e.label = 1;
    e.name = "p01";
    return e;
  }();
  return example;
}

// The query volume with `slices` planes along z (repeating p02's planes cyclically), or one plane.
Volume query_with(int64_t slices) {
  static const Volume p02 = segicl::io::read_image(kSamples + "images/chaos_mr_t2_p02.nii.gz");
  Volume v = p02;
  const int64_t plane = p02.size[0] * p02.size[1], source = p02.size[2];
  v.size[2] = slices;
  v.dims = slices == 1 ? 2 : 3;
  v.voxels.resize(static_cast<size_t>(plane * slices));
  for (int64_t z = 0; z < slices; ++z) {
    const int64_t from = slices == 1 ? source / 2 : z % source;
    std::copy_n(p02.voxels.begin() + from * plane, plane, v.voxels.begin() + z * plane);
  }
  return v;
}

void run(benchmark::State& state, int64_t slices) {
  at::set_num_threads(static_cast<int>(state.range(1)));
  const int k = static_cast<int>(state.range(0));
  const Volume query = query_with(slices);
  std::vector<Example> examples;
  segicl::infer::SegmentOptions options;
  if (k > 0) {
    examples.push_back(liver_example());
    options.slices_per_example = k;
  }
  options.modality = "MR";
  for (auto _ : state) benchmark::DoNotOptimize(segmenter().segment(query, examples, "segment the liver", options));
  state.counters["s_per_slice"] =
      benchmark::Counter(static_cast<double>(slices), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_Slice(benchmark::State& state) { run(state, 1); }
void BM_Volume100(benchmark::State& state) { run(state, 100); }

// Args: k, threads.
BENCHMARK(BM_Slice)->Args({0, 2})->Args({1, 2})->Args({3, 2})->Args({8, 2})->Args({3, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Volume100)->Args({3, 2})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);

}  // namespace

BENCHMARK_MAIN();
