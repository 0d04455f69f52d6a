// `segicl pack`: preprocess corpus slices into one compressed pack for training or evaluation.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/data/corpus.h"
#include "segicl/data/pack.h"

#include <nlohmann/json.hpp>

namespace segicl::cli {

void register_pack(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("pack",
                                 "Preprocess slices into a compressed pack\n"
                                 "  e.g. segicl pack --purpose train -o runs/train128.pack");
  static std::string out, purpose = "train", datasets;
  static data::PackOptions options;
  static uint64_t split_seed = 0;
  static bool force = false;
  cmd->add_option("-o,--out", out, "Output pack file")->required();
  cmd->add_option("--purpose", purpose, "train (train-role datasets, train split), val, or eval (any dataset)")
      ->check(CLI::IsMember({"train", "val", "eval"}))
      ->capture_default_str();
  cmd->add_option("--datasets", datasets, "Comma-separated dataset names (default: all allowed for the purpose)");
  cmd->add_option("--resolution", options.preprocess.resolution, "Plane size R")->capture_default_str();
  cmd->add_option("--empty-fraction", options.preprocess.empty_slice_fraction,
                  "Fraction of label-free 3D slices kept")->capture_default_str();
  cmd->add_option("--rgb", options.preprocess.luminance, "false keeps RGB channels (default: luminance)")->capture_default_str();
  cmd->add_option("--level", options.compression_level, "zstd level")->capture_default_str();
  cmd->add_option("--split-seed", split_seed, "Seed of the patient-level split")->capture_default_str();
  cmd->add_option("--seed", options.seed, "Seed for which empty slices are kept")->capture_default_str();
  cmd->add_flag("--force", force, "Overwrite an existing output");
  cmd->callback([&global] {
    start(global);
    if (std::filesystem::exists(out) && !force)
      SEGICL_THROW(UsageError, "output exists", out, "pass --force to overwrite it");
    auto corpus = data::Corpus::open(data::Corpus::locate(global.data_root), {split_seed});
    auto which = purpose == "train" ? data::PackPurpose::kTrain
                 : purpose == "val" ? data::PackPurpose::kVal
                                    : data::PackPurpose::kEval;
    const std::vector<std::string> wanted = split_list(datasets);
    data::PackWriter writer(which, options);
    auto logger = log::get("pack");
    auto started = std::chrono::steady_clock::now();
    int cases = 0;
    auto add = [&](const data::Dataset& d, const data::Case& c) {
      writer.add_case_from_files(d, c);
      ++cases;
      if (cases % 25 == 0)
        logger->info("{} cases, {} slices, {:.0f} s", cases, writer.num_slices(),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    };
    auto selected = [&](const std::string& name) {
      return wanted.empty() || std::find(wanted.begin(), wanted.end(), name) != wanted.end();
    };
    if (which == data::PackPurpose::kEval) {
      for (const auto& d : corpus.datasets())
        if (selected(d.name))
          for (const auto& c : d.cases) add(d, c);
    } else {
      data::TrainingView view(corpus, which == data::PackPurpose::kTrain ? data::Split::kTrain : data::Split::kVal);
      for (const auto& item : view.cases())
        if (selected(item.dataset->name)) add(*item.dataset, *item.item);
    }
    int64_t bytes = writer.write(out, nlohmann::json{{"split_seed", split_seed}, {"datasets", datasets}}.dump());
    std::printf("%s: %d cases, %lld slices, %.1f MiB, %.0f s\n", out.c_str(), cases,
                static_cast<long long>(writer.num_slices()), bytes / 1048576.0,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  });
}

}  // namespace segicl::cli
