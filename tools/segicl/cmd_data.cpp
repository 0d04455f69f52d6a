// `segicl data list|show`: inspect the corpus as datasets, tasks and slices.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/data/corpus.h"
#include "segicl/data/preprocess.h"
#include "segicl/io/volume.h"

namespace segicl::cli {
namespace {

void list_corpus(const GlobalOptions& global, bool with_slices) {
  auto corpus = data::Corpus::open(data::Corpus::locate(global.data_root));
  log::get("data")->info("corpus {}: {} datasets", corpus.root(), corpus.datasets().size());
  std::printf("%-20s %-4s %-5s %-24s %6s %6s  %s\n", "dataset", "dims", "role", "modality", "cases",
              with_slices ? "slices" : "", "tasks");
  int total_tasks = 0;
  for (const auto& d : corpus.datasets()) {
    int64_t slices = 0;
    if (with_slices) {
      for (const auto& c : d.cases) {
        if (d.dims == 2) {
          ++slices;
          continue;
        }
        auto image = io::read_image(c.image_path);
        auto prepared = data::prepare(image, nullptr, d.modality, {});
        slices += prepared.num_slices();
      }
    }
    int train = 0, val = 0, test = 0;
    for (const auto& c : d.cases)
      (c.split == data::Split::kTrain ? train : c.split == data::Split::kVal ? val : test)++;
    std::string tasks;
    for (const auto& t : d.tasks) tasks += (tasks.empty() ? "" : ", ") + t.structure;
    total_tasks += static_cast<int>(d.tasks.size());
    std::printf("%-20s %-4d %-5s %-24.24s %6zu %6s  %s\n", d.name.c_str(), d.dims, data::to_string(d.role),
                d.modality.c_str(), d.cases.size(), with_slices ? std::to_string(slices).c_str() : "",
                tasks.c_str());
    std::printf("%-20s      split train/val/test = %d/%d/%d\n", "", train, val, test);
  }
  std::printf("%zu datasets, %d tasks\n", corpus.datasets().size(), total_tasks);
}

// Montage of up to `count` slices containing the task, image in grey with the mask contour in red.
void show_task(const GlobalOptions& global, const std::string& task_name, const std::string& out, int count,
               int resolution) {
  auto corpus = data::Corpus::open(data::Corpus::locate(global.data_root));
  auto found = corpus.find_task(task_name);
  if (!found) {
    std::string known;
    for (const auto& d : corpus.datasets())
      for (const auto& t : d.tasks) known += (known.empty() ? "" : ", ") + t.name;
    SEGICL_THROW(UsageError, "unknown task '" + task_name + "'", "", "known tasks: " + known.substr(0, 600));
  }
  const auto& [dataset, task] = *found;
  std::vector<torch::Tensor> tiles;
  data::PreprocessOptions options;
  options.resolution = resolution;
  for (const auto& c : dataset->cases) {
    if (static_cast<int>(tiles.size()) >= count) break;
    if (!c.task.empty() && dataset->name + "/" + c.task != task.name) continue;
    auto [image, labels] = io::read_image_and_labels(c.image_path, c.label_path);
    auto volume = data::prepare(image, &labels, c.modality.empty() ? dataset->modality : c.modality, options);
    // The slice with the largest area of the task in this case: one tile per patient.
    int64_t best = -1, best_area = 0;
    auto ids = torch::tensor(std::vector<int64_t>(task.label_ids.begin(), task.label_ids.end())).to(torch::kInt32);
    for (int64_t s = 0; s < volume.num_slices(); ++s) {
      int64_t area = torch::isin(data::label_plane(volume, s, resolution), ids).sum().item<int64_t>();
      if (area > best_area) best_area = area, best = s;
    }
    if (best < 0) continue;
    auto grey = data::image_plane(volume, best, resolution)[0];
    auto mask = torch::isin(data::label_plane(volume, best, resolution), ids).to(torch::kFloat32);
    auto eroded = -torch::nn::functional::max_pool2d(-mask.view({1, 1, resolution, resolution}),
                                                     torch::nn::functional::MaxPool2dFuncOptions(3).stride(1).padding(1));
    auto contour = (mask - eroded.view({resolution, resolution})) > 0.5;
    auto rgb = torch::stack({torch::where(contour, torch::ones_like(grey), grey),
                             torch::where(contour, torch::zeros_like(grey), grey),
                             torch::where(contour, torch::zeros_like(grey), grey)});
    tiles.push_back(rgb);
  }
  if (tiles.empty()) SEGICL_THROW(DataError, "no slice of " + task_name + " contains the structure", "", "");
  const int64_t columns = std::min<int64_t>(4, tiles.size());
  const int64_t rows = (static_cast<int64_t>(tiles.size()) + columns - 1) / columns;
  auto canvas = torch::zeros({3, rows * resolution, columns * resolution});
  for (size_t i = 0; i < tiles.size(); ++i) {
    int64_t r = i / columns, c = i % columns;
    canvas.slice(1, r * resolution, (r + 1) * resolution).slice(2, c * resolution, (c + 1) * resolution).copy_(tiles[i]);
  }
  io::Volume png;
  png.dims = 2;
  png.channels = 3;
  png.size = {columns * resolution, rows * resolution, 1};
  auto interleaved = (canvas * 255).round().permute({1, 2, 0}).contiguous();
  png.voxels.assign(interleaved.data_ptr<float>(), interleaved.data_ptr<float>() + interleaved.numel());
  png.geometry.spacing_known = false;
  io::write_image(png, out);
  std::printf("%s: %zu slices (one per case, largest cross-section) -> %s\n", task_name.c_str(), tiles.size(),
              out.c_str());
}

}  // namespace

void register_data(CLI::App& app, GlobalOptions& global) {
  auto* data_cmd = app.add_subcommand("data", "Inspect the corpus: datasets, tasks, slices");
  data_cmd->require_subcommand(1);
  auto* list = data_cmd->add_subcommand("list", "List datasets with role, splits and tasks\n  e.g. segicl data list --data ../shared/data");
  static bool slices = false;
  list->add_flag("--slices", slices, "Also count 2D slices per dataset (reads every volume)");
  list->callback([&global] {
    start(global);
    list_corpus(global, slices);
  });
  auto* show = data_cmd->add_subcommand("show", "Write a montage of a task's slices with mask contours\n  e.g. segicl data show chaos_mr_t2/liver --out liver.png");
  static std::string task, out;
  static int count = 8, resolution = 128;
  show->add_option("task", task, "Task name, e.g. btcv_ct/spleen")->required();
  show->add_option("-o,--out", out, "Output PNG")->required();
  show->add_option("--count", count, "Number of cases to show")->capture_default_str();
  show->add_option("--resolution", resolution, "Tile size in pixels")->capture_default_str();
  show->callback([&global] {
    start(global);
    show_task(global, task, out, count, resolution);
  });
}

}  // namespace segicl::cli
