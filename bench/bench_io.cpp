// Image reading time per file format (io::read_image): the bundled CHAOS volume p02 written by our
// own writer as .nii.gz, .nii, .mha (zlib-compressed) and .nrrd (gzip), then read back. The
// readers check a file before ITK decodes it (reports/RELIABILITY.md): compressed .mha and gzip
// .nrrd data are inflated once by the check and once more by ITK, so their cost shows here beside
// the formats that are decoded once.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "segicl/io/volume.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kFormats = {".nii.gz", ".nii", ".mha", ".nrrd"};

// A scratch folder holding the sample in every format, removed at exit.
class Samples {
 public:
  Samples() : dir_(fs::temp_directory_path() / ("segicl_bench_io_" + std::to_string(::getpid()))) {
    fs::create_directories(dir_);
    const auto image = segicl::io::read_image(std::string(SEGICL_SOURCE_DIR) + "/data/samples/" +
                                              "chaos_mr_t2/images/chaos_mr_t2_p02.nii.gz");
    for (const auto& format : kFormats) segicl::io::write_image(image, path(format));
  }
  ~Samples() { fs::remove_all(dir_); }
  std::string path(const std::string& format) const { return (dir_ / ("p02" + format)).string(); }

 private:
  fs::path dir_;
};

const Samples& samples() {
  static const Samples cached;
  return cached;
}

void BM_ReadImage(benchmark::State& state) {
  const std::string& format = kFormats[static_cast<size_t>(state.range(0))];
  const std::string path = samples().path(format);
  state.SetLabel(format + ", " + std::to_string(fs::file_size(path) / 1024) + " KiB");
  int64_t voxels = 0;
  for (auto _ : state) {
    const auto image = segicl::io::read_image(path);
    voxels = image.num_voxels();
    benchmark::DoNotOptimize(image.voxels.data());
  }
  const double read = static_cast<double>(voxels) * static_cast<double>(state.iterations());
  state.counters["Mvoxels_per_s"] = benchmark::Counter(read / 1e6, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReadImage)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
