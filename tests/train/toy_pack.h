// A small real-looking training pack for the trainer tests: 4 patients x 4 slices of 32x32 (or
// `resolution`^2, the squares clipped) with a bright square "liver" that moves. Shared by the
// trainer, distributed, crash-safety and segmenter (exemplar memory) tests.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "segicl/data/pack.h"

namespace segicl::train::testing {

inline std::string write_toy_pack(const std::filesystem::path& dir, int resolution = 32) {
  data::Dataset d;
  d.name = "toy_ct";
  d.modality = "CT";
  d.dims = 3;
  d.role = data::Role::kTrain;
  d.tasks = {{"toy_ct/liver", "liver", {1}}};
  for (int i = 0; i < 4; ++i)
    d.cases.push_back({"c" + std::to_string(i),
                       "g" + std::to_string(i),
                       "",
                       "",
                       "",
                       {},
                       "",
                       data::Split::kTrain});
  data::PackOptions options;
  options.preprocess.resolution = resolution;
  data::PackWriter writer(data::PackPurpose::kTrain, options);
  for (int i = 0; i < 4; ++i) {
    data::PreparedVolume v;
    v.image = torch::full({1, 4, resolution, resolution}, 0.2);
    v.labels = torch::zeros({4, resolution, resolution}, torch::kInt32);
    for (int s = 0; s < 4; ++s) {
      v.labels[s].slice(0, 4 + 2 * s, 16 + 2 * s).slice(1, 6 + i, 20 + i).fill_(1);
      v.image[0][s].slice(0, 4 + 2 * s, 16 + 2 * s).slice(1, 6 + i, 20 + i).fill_(0.8);
    }
    writer.add_case(d, d.cases[i], v);
  }
  auto path = (dir / "toy.pack").string();
  writer.write(path);
  return path;
}

}  // namespace segicl::train::testing
