// Shared fixtures of the infer tests: a random-weight `tiny` checkpoint and synthetic volumes with
// a bright blob and its label. Not a general test library.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "segicl/io/volume.h"
#include "segicl/models/checkpoint.h"
#include "segicl/models/config.h"

namespace segicl::infer::testing {

// A per-process scratch folder, removed when the process exits.
inline std::filesystem::path temp_dir() {
  struct Scratch {
    std::filesystem::path path;
    ~Scratch() {
      std::error_code ignored;  // best effort: a leftover temp folder is harmless
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Scratch dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("segicl_infer_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return Scratch{d};
  }();
  return dir.path;
}

// Random weights are enough for shape, geometry and determinism tests.
inline std::string tiny_checkpoint() {
  static const std::string path = [] {
    torch::manual_seed(0);
    models::SegICLModel model(models::load_preset("tiny"));
    auto file = (temp_dir() / "tiny.pt").string();
    models::save_checkpoint(file, *model, config::Json::object());
    return file;
  }();
  return path;
}

inline io::Geometry oblique_geometry() {
  io::Geometry g;
  g.spacing = {0.8, 1.3, 3.0};
  g.origin = {-12.5, 40.25, 7.0};
  g.direction = {0, -1, 0, 1, 0, 0, 0, 0, -1};  // x and y swapped with a flip, z flipped
  return g;
}

// A volume with an ellipsoid blob (intensity 200 on a 0..50 ramp) and labels (blob = `label`).
inline std::pair<io::Volume, io::LabelMap> blob_volume(std::array<int64_t, 3> size, const io::Geometry& geometry,
                                                       int dims = 3, int label = 2) {
  io::Volume image;
  io::LabelMap labels;
  image.dims = labels.dims = dims;
  image.size = labels.size = size;
  image.geometry = labels.geometry = geometry;
  const int64_t n = size[0] * size[1] * size[2];
  image.voxels.resize(n);
  labels.labels.resize(n);
  for (int64_t z = 0; z < size[2]; ++z)
    for (int64_t y = 0; y < size[1]; ++y)
      for (int64_t x = 0; x < size[0]; ++x) {
        const int64_t i = (z * size[1] + y) * size[0] + x;
        const double dx = (x - size[0] / 2.0) / (size[0] / 4.0), dy = (y - size[1] / 2.0) / (size[1] / 4.0);
        const double dz = size[2] > 1 ? (z - size[2] / 2.0) / (size[2] / 3.0) : 0.0;
        const bool inside = dx * dx + dy * dy + dz * dz < 1.0;
        image.voxels[i] = inside ? 200.0f : static_cast<float>((x + y) % 50);
        labels.labels[i] = inside ? label : 0;
      }
  return {image, labels};
}

}  // namespace segicl::infer::testing
