// `segicl eval`: the paper's few-shot protocol on a corpus dataset, with baselines, to a report.
#include <cstdio>
#include <iostream>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/data/corpus.h"
#include "segicl/data/exemplar_memory.h"
#include "segicl/eval/metrics.h"
#include "segicl/eval/protocol.h"
#include "segicl/io/volume.h"
#include "segicl/models/checkpoint.h"

namespace segicl::cli {
namespace {

// Mask tensor [Z, Y, X] of `labels` == label (label < 0: any non-zero).
torch::Tensor mask_of(const io::LabelMap& labels, int label) {
  std::vector<uint8_t> values(labels.labels.size());
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = label < 0 ? labels.labels[i] != 0 : labels.labels[i] == label;
  return torch::from_blob(values.data(), {labels.size[2], labels.size[1], labels.size[0]}, torch::kUInt8).clone();
}

}  // namespace

void register_compare(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("compare",
                                 "Dice, IoU and HD95 (mm) of a predicted mask against a reference on the same grid\n"
                                 "  e.g. segicl compare pred.nii.gz labels/case.nii.gz --reference-label 1");
  static std::string predicted, reference;
  static int predicted_label = -1, reference_label = -1;
  cmd->add_option("prediction", predicted, "Predicted label map")->required();
  cmd->add_option("reference", reference, "Reference label map")->required();
  cmd->add_option("--label", predicted_label, "Foreground value in the prediction (-1: any non-zero)")->capture_default_str();
  cmd->add_option("--reference-label", reference_label, "Foreground value in the reference (-1: any non-zero)")->capture_default_str();
  cmd->callback([&global] {
    start(global);
    auto p = io::read_labels(predicted);
    auto r = io::read_labels(reference);
    if (p.size != r.size || !p.geometry.same_as(r.geometry, 1e-3))
      SEGICL_THROW(DataError, "prediction and reference are on different grids", predicted,
                   "compare masks written on the reference image's grid");
    const auto& s = r.geometry.spacing;
    auto overlap = eval::compare(mask_of(p, predicted_label), mask_of(r, reference_label), {s[2], s[1], s[0]});
    std::printf("dice %.4f  iou %.4f  hd95 %.2f mm  (predicted %lld voxels, reference %lld)\n", overlap.dice, overlap.iou,
                overlap.hd95, static_cast<long long>(overlap.pred_voxels), static_cast<long long>(overlap.truth_voxels));
  });
}

void register_eval(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("eval",
                                 "Few-shot evaluation (paper §4.2): Dice per volume over random example draws\n"
                                 "  e.g. segicl eval --model models/segicl-crossconv.pt --dataset chaos_mr_t2 --examples 0,1,3 "
                                 "--draws 5 -o reports/chaos");
  static eval::ProtocolOptions o;
  static std::string model_path, examples = "0,1,3", tasks, methods = "segicl,atlas", out;
  cmd->add_option("--model", model_path, "Checkpoint (needed for method segicl)");
  cmd->add_option("--dataset", o.dataset, "Corpus dataset")->required();
  cmd->add_option("--tasks", tasks, "Comma-separated structures (default: all of the dataset)");
  cmd->add_option("--examples", examples, "Comma-separated numbers of examples x")->capture_default_str();
  cmd->add_option("--draws", o.draws, "Independent example draws per x")->capture_default_str();
  cmd->add_option("--cases", o.max_cases, "Only the first N query cases (0 = all)")->capture_default_str();
  cmd->add_option("--steps", o.ddim_steps, "DDIM steps")->capture_default_str();
  cmd->add_option("--samples", o.num_samples, "Decoder samples averaged per slice")->capture_default_str();
  cmd->add_option("--batch-slices", o.batch_slices, "Slices per forward pass")->capture_default_str();
  cmd->add_option("--text", o.with_text, "Give the instruction \"segment the <structure>\"")->capture_default_str();
  cmd->add_option("--hd95", o.hd95, "Also compute HD95 in mm")->capture_default_str();
  cmd->add_option("--methods", methods, "segicl, atlas and/or unet (supervised U-Net upper bound)")
      ->capture_default_str();
  cmd->add_option("--unet-steps", o.unet.steps, "U-Net: training steps per fold")->capture_default_str();
  cmd->add_option("--unet-batch", o.unet.batch_size, "U-Net: planes per step")->capture_default_str();
  cmd->add_option("--unet-lr", o.unet.learning_rate, "U-Net: Adam learning rate (poly decay)")->capture_default_str();
  cmd->add_option("--unet-features", o.unet.base_features, "U-Net: features of the first level")
      ->capture_default_str();
  cmd->add_option("--unet-levels", o.unet.levels, "U-Net: resolution levels")->capture_default_str();
  cmd->add_option("--unet-folds", o.unet.folds, "U-Net: patient folds when queries are also support patients")
      ->capture_default_str();
  cmd->add_option("--unet-augment", o.unet.augment, "U-Net: intensity + translation augmentation")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the example draws (and of the U-Net's folds, init, batches)")->capture_default_str();
  cmd->add_option("--label", o.model_label, "Name of the model's rows in the report")->capture_default_str();
  static std::string memory = "auto";
  cmd->add_option("--memory", memory,
                  "Exemplar memory recalled at x = 0 (auto: the model's own MODEL.memory if present; none: text alone)")
      ->capture_default_str();
  cmd->add_option("--memory-examples", o.memory_examples, "Pairs recalled from the memory at x = 0")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--refine-examples", o.refine_examples,
                  "Second pass with this many of the query's own most confident predicted planes as examples (0: off)")
      ->check(CLI::Range(0, 16))
      ->capture_default_str();
  cmd->add_option("--memory-top-up", o.memory_top_up,
                  "Also fill the context of 0 < x < memory-examples up to memory-examples with recalled pairs")
      ->capture_default_str();
  cmd->add_option("--memory-choice", o.memory_choice,
                  "Which recalled pairs: spread (seeded, patients and datasets in turn) or similar (most like the query)")
      ->check(CLI::IsMember(data::memory_choices()))
      ->capture_default_str();
  static std::string post;
  cmd->add_option("--post", post,
                  "Also score the model's masks after these post-processing steps (largest-cc, fill-holes), as extra "
                  "rows <label>+<steps>")
      ->capture_default_str();
  cmd->add_option("--presence-check", o.presence_fractions,
                  "Also score the model's masks with the planes whose reverse-prediction agreement is below F x the "
                  "query's best plane emptied, as extra rows <label>+presence<F> (comma-separated fractions in (0, 1])")
      ->delimiter(',');
  cmd->add_option("--query-split", o.query_split,
                  "Queries of a train-role dataset: its test split, or val (to choose settings without the test split)")
      ->check(CLI::IsMember({"test", "val"}))
      ->capture_default_str();
  cmd->add_option("-o,--out", out, "Report folder (metrics.json, report.md)")->required();
  cmd->callback([&global] {
    start(global);
    o.tasks = split_list(tasks);
    o.methods = split_list(methods);
    o.postprocess = split_list(post);
    o.num_examples = split_ints(examples, "--examples", "e.g. --examples 0,1,3");
    auto corpus = data::Corpus::open(data::Corpus::locate(global.data_root));
    o.memory = model_path.empty() ? "" : data::resolve_memory_path(model_path, memory);
    models::LoadedCheckpoint loaded;
    if (!model_path.empty()) loaded = models::load_checkpoint(model_path);
    auto result = eval::run_protocol(corpus, loaded.model ? loaded.model.get() : nullptr, o);
    if (!model_path.empty()) result.options["model"] = {{"path", model_path}, {"meta_step", loaded.meta.value("step", 0)},
                                                        {"stage", loaded.meta.value("stage", 0)}};
    std::cout << eval::write_report(result, out);
  });
}

}  // namespace segicl::cli
