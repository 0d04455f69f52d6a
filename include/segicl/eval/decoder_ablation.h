// Decoder ablation of a paper-architecture checkpoint (issue 4: "decoder with vs without the
// query-image hint; DDIM steps vs Dice and time"). Masks of a pack's slices are encoded by the
// model's own condition encoder (stage 1, §3.3) and rendered back by the latent-diffusion
// decoder, at several DDIM step counts, with the query image as hint and without it. This is the
// decoder's ceiling: the full in-context path (stage 2) feeds it predicted tokens instead of these.
// Not for the crossconv architecture (it has no decoder): UsageError.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "segicl/core/config.h"
#include "segicl/data/pack.h"
#include "segicl/models/segicl_model.h"

namespace segicl::eval {

struct DecoderAblationOptions {
  std::vector<int> ddim_steps{1, 4, 10, 25};
  std::vector<bool> hints{true, false};  // query image given to the decoder or not
  int slices = 64;                       // positive (slice, task) pairs of the pack, seeded choice
  int batch = 16;                        // slices per decoder call
  uint64_t seed = 0;                     // slice choice and diffusion noise
};

struct DecoderAblationRow {
  int ddim_steps = 0;
  bool hint = true;
  double dice_mean = 0, dice_std = 0;  // over slices (per-slice Dice at 0.5)
  double ms_per_slice = 0;             // decoder wall time per slice (condition encoding excluded)
  std::vector<double> dices;           // per slice, in the same slice order for every row
};

struct DecoderAblationResult {
  config::Json options;  // resolved options, model config summary, the chosen slices' tasks
  std::vector<DecoderAblationRow> rows;
};

// Runs every (steps, hint) variant on the same slices and noise seeds. Throws UsageError for a
// crossconv model, a model trained without the hint asked to use one, or a pack whose
// resolution/channels do not fit the model; DataError when the pack has no positive slice.
DecoderAblationResult run_decoder_ablation(models::SegICLModelImpl& model, const data::Pack& pack,
                                           const DecoderAblationOptions& options);

// Writes metrics.json and report.md (one table: steps x hint, Dice % mean ± std, ms per slice;
// where both hints ran, the paired difference on vs off per step count with its standard error
// over slices) into `out_dir`, atomically per file. Returns the Markdown text.
std::string write_decoder_report(const DecoderAblationResult& result, const std::string& out_dir);

}  // namespace segicl::eval
