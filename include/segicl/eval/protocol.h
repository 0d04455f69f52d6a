// The paper's evaluation protocol (§4.2) on a corpus dataset: for each task and each number of
// examples x, draw x example slices at random from the dataset's support pool (never the query's
// own patient), segment every slice of every query case, stack the slices back and score Dice per
// 3D volume (2D images: per image) on the file's own grid; repeat for several independent draws.
// Baselines run on exactly the same draws. Not a training-time validator (see train).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "segicl/core/config.h"
#include "segicl/data/corpus.h"
#include "segicl/data/exemplar_memory.h"
#include "segicl/eval/supervised_baseline.h"
#include "segicl/models/segicl_model.h"

namespace segicl::eval {

struct ProtocolOptions {
  std::string dataset;               // corpus dataset name, e.g. "chaos_mr_t2"
  std::vector<std::string> tasks;    // structures or full task names; empty = every task
  std::vector<int> num_examples{0, 1, 3};  // x values (the paper: 0..3; we also go to 5, 8, 16)
  int draws = 5;                     // independent example draws per x (the paper averages 5)
  uint64_t seed = 0;                 // draws are a pure function of (seed, task, x, draw, case)
  int max_cases = 0;                 // evaluate only the first N query cases (0 = all)
  int ddim_steps = 4;                // decoder sampling steps
  int num_samples = 1;               // decoder samples averaged per slice
  int batch_slices = 32;             // query slices per forward pass
  bool with_text = true;             // give the instruction "segment the <structure>" too
  bool hd95 = true;                  // also compute HD95 (mm) per volume
  // "atlas": mean of the example masks > 0.5; "unet": the supervised U-Net (supervised_baseline.h),
  // trained here on the support pool (patient folds) and scored once per query case.
  std::vector<std::string> methods{"segicl", "atlas"};
  UNetBaselineOptions unet;          // method "unet" only; its seed is `seed` (derived by name)
  std::string model_label = "segicl";  // name of the model's rows in the report (e.g. "universeg")
  // With text: pairs of the named structure recalled from this exemplar memory
  // (data/exemplar_memory.h; training-pool slices only), drawn per (task, x, draw, query) like
  // examples: `memory_examples` at x = 0, and memory_examples - x more at 0 < x < memory_examples
  // with `memory_top_up`. Empty: the model gets the x examples (or the text) alone.
  std::string memory;
  int memory_examples = 3;
  bool memory_top_up = false;  // x < memory_examples: add memory_examples - x recalled pairs too
  // "similar": the stored slices most like the query's planes (recall_similar), the same for
  // every draw; "spread": seeded per draw, patients and datasets in turn (ExemplarMemory::recall;
  // the default until session 10).
  std::string memory_choice = "similar";
  // Self-prompting: after the first pass, this many of the query's most confident predicted planes
  // (data::confident_planes) join the context for a second pass (0: one pass).
  int refine_examples = 0;
  // Post-processing steps (infer/postprocess.h: "largest-cc", "fill-holes") applied to the model's
  // thresholded mask on the file's grid, as `segicl segment --post` does. Scored as extra rows
  // labelled "<model_label>+<steps>" beside the raw ones, so one run compares both on the same
  // predictions. Empty: raw rows only.
  std::vector<std::string> postprocess;
  // Presence check (infer/presence.h): for each fraction f, extra rows "<model_label>+presence<f>"
  // score the model's planes with those whose reverse agreement is below f x the query's best
  // plane emptied. The agreement is computed once per prediction (about one more forward pass).
  // Empty: no check.
  std::vector<double> presence_fractions;
  // Which split of a train-role dataset gives the queries: "test" (its fixed test split, the
  // reported numbers) or "val" (for choosing settings without looking at the test split). Ood
  // and eval datasets query every case either way.
  std::string query_split = "test";
};

// num_examples of the rows of a method that takes no examples (the supervised U-Net): it is
// trained on the whole support pool, scored once per query case (draw 0).
constexpr int kSupervisedExamples = -1;

struct CaseScore {
  std::string task, method, case_id;
  int num_examples = 0, draw = 0;
  double dice = 0, hd95 = 0;  // whole volume (every slice), on the file's grid
  bool both_empty = false;
  // Restricted to the planes holding the structure (metrics.h slice_scores; NaN when the case has
  // none): Dice over the structure's slice range (the SSL-ALPNet protocol of the paper's Table 1
  // baselines) and the mean per-plane Dice (the paper's 2D setting). 2D cases: both equal dice.
  double dice_in_extent = std::numeric_limits<double>::quiet_NaN();
  double mean_slice_dice = std::numeric_limits<double>::quiet_NaN();
};

// Which per-case score a summary averages (CaseScore's fields).
enum class Score { kDice, kDiceInExtent, kMeanSliceDice };

struct ProtocolResult {
  config::Json options;            // the resolved options, model meta, corpus root; "unet": folds
                                   // (train/query cases, training time) when that method ran
  std::vector<CaseScore> scores;   // one row per (task, method, x, draw, case)
  double seconds = 0;
};

// Runs the protocol. `model` may be null when only baselines are requested. Throws UsageError for
// an unknown dataset/task or a model whose resolution/channels do not fit, IoError/DataError for
// unreadable cases.
ProtocolResult run_protocol(const data::Corpus& corpus, models::SegICLModelImpl* model, const ProtocolOptions& options);

// Summary: for each (task, method, x) the mean over cases per draw, then mean and standard
// deviation over draws; plus the mean over tasks. As JSON. Cases whose score is NaN (no plane
// holds the structure, for the restricted scores) are left out of the means.
config::Json summarize(const ProtocolResult& result, Score score = Score::kDice);

// Writes metrics.json (options, summary, every row), report.md (tables: tasks as columns, Dice %
// mean ± std over draws; the paper's rows beside ours for chaos_mr_t2; for 3D datasets two more
// tables, restricted to the structure's planes: "summary_in_extent", "summary_slices" in the
// JSON) and a completion marker DONE, into `out_dir`, atomically per file. Returns the Markdown.
std::string write_report(const ProtocolResult& result, const std::string& out_dir);

}  // namespace segicl::eval
