// Toy datasets for the eval tests, in the corpus layout (../shared/data/FORMAT.md):
// <root>/<name>/images/<id>.<ext>, labels/<id>.<ext> and dataset.json, each case its own group
// (patient). Without a README beside them the datasets are ood: every case is a query.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "segicl/core/config.h"
#include "segicl/io/volume.h"

namespace segicl::eval::testing {

struct ToyCase {
  io::Volume image;
  io::LabelMap labels;
  std::string task;  // the case's own task (medscribble's shape), or "" for the dataset's labels
};

// A size x size 2D image, background 10, with the rectangle [x0, x1) x [y0, y1) at 200 and label 1.
inline ToyCase square_case(int size, int x0, int y0, int x1, int y1, const std::string& task = "") {
  ToyCase c;
  c.image.dims = c.labels.dims = 2;
  c.image.size = c.labels.size = {size, size, 1};
  c.image.voxels.assign(static_cast<size_t>(size) * size, 10.0f);
  c.labels.labels.assign(c.image.voxels.size(), 0);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) c.labels.labels[y * size + x] = 1, c.image.voxels[y * size + x] = 200.0f;
  c.task = task;
  return c;
}

// Writes dataset `name` under `root` (replacing any old one): case i is `<id_prefix><i>` in files
// of `extension` (".png", ".nii.gz"); label 1 is `structure` (for a case with its own task too).
inline void write_toy_dataset(const std::filesystem::path& root, const std::string& name,
                              const std::string& structure, const std::vector<ToyCase>& cases,
                              const std::string& id_prefix, const std::string& extension = ".png") {
  const auto folder = root / name;
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder / "images");
  std::filesystem::create_directories(folder / "labels");
  config::Json entries = config::Json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string id = id_prefix + std::to_string(i);
    io::write_image(cases[i].image, (folder / "images" / (id + extension)).string());
    io::write_labels(cases[i].labels, (folder / "labels" / (id + extension)).string());
    config::Json entry{{"id", id}, {"group", id}, {"image", "images/" + id + extension},
                       {"label", "labels/" + id + extension}};
    if (!cases[i].task.empty()) {
      entry["task"] = cases[i].task;
      entry["labels"] = {{"1", structure}};
    }
    entries.push_back(entry);
  }
  const int dims = cases.empty() ? 2 : cases.front().image.dims;
  std::ofstream(folder / "dataset.json")
      << config::Json{{"name", name}, {"dims", dims}, {"labels", {{"1", structure}}}, {"cases", entries}}.dump(2);
}

}  // namespace segicl::eval::testing
