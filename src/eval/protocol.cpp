// The few-shot evaluation protocol of the paper (§4.2) and its report (see protocol.h).
#include "segicl/eval/protocol.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/seed.h"
#include "segicl/data/preprocess.h"
#include "segicl/eval/metrics.h"
#include "segicl/io/volume.h"

namespace segicl::eval {
using config::Json;

namespace {

struct LoadedCase {
  const data::Case* item;
  data::PreparedVolume volume;
  torch::Tensor source_labels;       // [Z, Y, X] int32 on the file's grid
  std::vector<double> spacing;       // mm, in [Z, Y, X] order
  io::Geometry geometry;
};

torch::Tensor source_label_tensor(const io::LabelMap& l) {
  std::vector<int32_t> v(l.labels.begin(), l.labels.end());
  return torch::from_blob(v.data(), {l.size[2], l.size[1], l.size[0]}, torch::kInt32).clone();
}

torch::Tensor ids_tensor(const std::vector<int>& ids) {
  return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).to(torch::kInt32);
}

// The paper's results (Table 1, CHAOS MR T2, Dice %), quoted beside ours.
const char* kPaperChaos =
    "| paper: SegICL ICL-0 | 70.91 | 62.95 | 82.20 | 80.47 | 73.95 |\n"
    "| paper: SegICL ICL-1 | 75.42 | 71.95 | 86.22 | 85.90 | 79.65 |\n"
    "| paper: SegICL ICL-3 | 79.47 | 78.92 | 92.18 | 89.95 | 85.13 |\n"
    "| paper: SSL-ALPNet | 76.10 | 72.18 | 85.18 | 81.92 | 78.84 |\n"
    "| paper: SSL-VQNet | 79.92 | 77.21 | 91.56 | 89.54 | 84.56 |\n";

}  // namespace

ProtocolResult run_protocol(const data::Corpus& corpus, models::SegICLModelImpl* model, const ProtocolOptions& o) {
  auto logger = log::get("eval");
  const auto started = std::chrono::steady_clock::now();
  const data::Dataset* dataset = corpus.find(o.dataset);
  if (!dataset) SEGICL_THROW(UsageError, "unknown dataset '" + o.dataset + "'", corpus.root(), "see `segicl data list`");
  const bool want_model = std::count(o.methods.begin(), o.methods.end(), "segicl") > 0;
  if (want_model && !model) SEGICL_THROW(UsageError, "method 'segicl' needs --model", "", "");
  const int resolution = model ? static_cast<int>(model->config().resolution) : 128;
  data::PreprocessOptions pre;
  pre.resolution = resolution;
  pre.luminance = !model || model->config().in_channels == 1;

  // Tasks to evaluate.
  std::vector<data::Task> tasks;
  for (const auto& t : dataset->tasks) {
    bool wanted = o.tasks.empty();
    for (const auto& name : o.tasks) wanted |= (name == t.structure || name == t.name);
    if (wanted) tasks.push_back(t);
  }
  if (tasks.empty()) SEGICL_THROW(UsageError, "no task of " + o.dataset + " matches --tasks", "", "see `segicl data list`");

  // Queries: the test split (all cases of ood/eval datasets); support: other patients (train
  // split for train-role datasets, so a test patient is never an example).
  std::vector<LoadedCase> cases;
  std::vector<bool> is_query;
  int queries = 0;
  for (const auto& c : dataset->cases) {
    const bool query = c.split == data::Split::kTest && (o.max_cases == 0 || queries < o.max_cases);
    const bool support = dataset->role != data::Role::kTrain || c.split == data::Split::kTrain;
    if (!query && !support) continue;
    auto [image, labels] = io::read_image_and_labels(c.image_path, c.label_path);
    LoadedCase loaded{&c, data::prepare(image, &labels, c.modality.empty() ? dataset->modality : c.modality, pre),
                      source_label_tensor(labels),
                      {image.geometry.spacing[2], image.geometry.spacing[1], image.geometry.spacing[0]},
                      image.geometry};
    cases.push_back(std::move(loaded));
    is_query.push_back(query);
    queries += query;
  }
  logger->info("{}: {} query cases, {} cases loaded, {} tasks", o.dataset, queries, cases.size(), tasks.size());

  ProtocolResult result;
  result.options = {{"dataset", o.dataset}, {"num_examples", o.num_examples}, {"draws", o.draws}, {"seed", o.seed},
                    {"max_cases", o.max_cases}, {"ddim_steps", o.ddim_steps}, {"num_samples", o.num_samples},
                    {"with_text", o.with_text}, {"methods", o.methods}, {"resolution", resolution},
                    {"queries", queries}, {"corpus", corpus.root()}};
  torch::NoGradGuard no_grad;
  if (model) model->eval();

  for (const auto& task : tasks) {
    auto ids = ids_tensor(task.label_ids);
    // Support pool: (case, slice) planes containing the structure.
    std::vector<std::pair<int, int64_t>> pool;
    for (size_t c = 0; c < cases.size(); ++c) {
      if (dataset->role == data::Role::kTrain && cases[c].item->split != data::Split::kTrain) continue;
      for (int64_t s = 0; s < cases[c].volume.num_slices(); ++s)
        if (torch::isin(data::label_plane(cases[c].volume, s, resolution), ids).sum().item<int64_t>() >= 3)
          pool.emplace_back(static_cast<int>(c), s);
    }
    const std::string instruction = o.with_text ? "segment the " + task.structure : "";
    for (int x : o.num_examples) {
      for (int draw = 0; draw < o.draws; ++draw) {
        for (size_t q = 0; q < cases.size(); ++q) {
          if (!is_query[q]) continue;
          const auto& query = cases[q];
          std::mt19937_64 rng(derive_seed(o.seed, task.name + "/" + std::to_string(x) + "/" + std::to_string(draw) + "/" +
                                                      query.item->id));
          std::vector<std::pair<int, int64_t>> eligible;
          for (const auto& p : pool)
            if (cases[p.first].item->group != query.item->group) eligible.push_back(p);
          std::shuffle(eligible.begin(), eligible.end(), rng);
          if (static_cast<int>(eligible.size()) < x)
            SEGICL_THROW(DataError, "support pool of " + task.name + " has only " + std::to_string(eligible.size()) +
                                        " slices for x = " + std::to_string(x), "", "use fewer examples");
          std::vector<torch::Tensor> ctx_images, ctx_masks;
          for (int i = 0; i < x; ++i) {
            const auto& [c, s] = eligible[i];
            ctx_images.push_back(data::image_plane(cases[c].volume, s, resolution));
            ctx_masks.push_back(torch::isin(data::label_plane(cases[c].volume, s, resolution), ids)
                                    .to(torch::kFloat32).unsqueeze(0));
          }
          torch::Tensor images = x ? torch::stack(ctx_images) : torch::Tensor();
          torch::Tensor masks = x ? torch::stack(ctx_masks) : torch::Tensor();
          const int64_t n = query.volume.num_slices();
          auto truth = torch::isin(query.source_labels, ids);
          for (const auto& method : o.methods) {
            torch::Tensor planes;  // [N, R, R] probabilities
            if (method == "segicl") {
              // The UniverSeg architecture has no k = 0 mode: no row rather than a failure.
              if (x == 0 && model->config().needs_examples()) continue;
              auto context = model->encode_context(images, masks, instruction);
              std::vector<torch::Tensor> outputs;
              for (int64_t begin = 0; begin < n; begin += o.batch_slices) {
                std::vector<torch::Tensor> batch;
                for (int64_t s = begin; s < std::min(n, begin + o.batch_slices); ++s)
                  batch.push_back(data::image_plane(query.volume, s, resolution));
                models::SegmentOptions so;
                so.ddim_steps = o.ddim_steps;
                so.num_samples = o.num_samples;
                so.seed = derive_seed(o.seed, "eval-noise");
                outputs.push_back(model->segment(context, torch::stack(batch), so).probability.squeeze(1).cpu());
              }
              planes = torch::cat(outputs);
            } else if (method == "atlas") {
              if (x == 0) continue;  // no examples, no atlas
              planes = (masks.mean(0) > 0.5).to(torch::kFloat32).expand({n, resolution, resolution}).contiguous();
            } else {
              SEGICL_THROW(UsageError, "unknown method '" + method + "'", "", "use segicl or atlas");
            }
            auto predicted = data::planes_to_source_grid(planes, query.volume) > 0.5;
            CaseScore row{task.name, method == "segicl" ? o.model_label : method, query.item->id, x, draw};
            if (o.hd95) {
              auto overlap = compare(predicted, truth, query.spacing);
              row.dice = overlap.dice;
              row.hd95 = overlap.hd95;
              row.both_empty = overlap.both_empty;
            } else {
              row.dice = dice(predicted, truth);
            }
            result.scores.push_back(row);
          }
        }
        logger->info("{} x={} draw {}: done ({} rows)", task.name, x, draw, result.scores.size());
      }
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

Json summarize(const ProtocolResult& result) {
  // (task, method, x) -> draw -> dices
  std::map<std::tuple<std::string, std::string, int>, std::map<int, std::vector<double>>> groups;
  for (const auto& r : result.scores) groups[{r.task, r.method, r.num_examples}][r.draw].push_back(r.dice);
  Json rows = Json::array();
  std::map<std::pair<std::string, int>, std::vector<std::vector<double>>> per_method;  // draw means per task
  for (const auto& [key, draws] : groups) {
    std::vector<double> means;
    for (const auto& [draw, dices] : draws) {
      double sum = 0;
      for (double d : dices) sum += d;
      means.push_back(sum / dices.size());
    }
    double mean = 0, var = 0;
    for (double m : means) mean += m;
    mean /= means.size();
    for (double m : means) var += (m - mean) * (m - mean);
    double stdev = means.size() > 1 ? std::sqrt(var / (means.size() - 1)) : 0.0;
    rows.push_back({{"task", std::get<0>(key)}, {"method", std::get<1>(key)}, {"num_examples", std::get<2>(key)},
                    {"dice_mean", mean}, {"dice_std_over_draws", stdev}, {"draw_means", means},
                    {"cases", draws.begin()->second.size()}});
    per_method[{std::get<1>(key), std::get<2>(key)}].push_back(means);
  }
  Json means = Json::array();
  for (const auto& [key, task_means] : per_method) {
    // Mean over tasks per draw, then mean/std over draws.
    size_t draws = task_means.front().size();
    std::vector<double> per_draw(draws, 0.0);
    for (const auto& m : task_means)
      for (size_t d = 0; d < draws && d < m.size(); ++d) per_draw[d] += m[d] / task_means.size();
    double mean = 0, var = 0;
    for (double v : per_draw) mean += v;
    mean /= per_draw.size();
    for (double v : per_draw) var += (v - mean) * (v - mean);
    means.push_back({{"method", key.first}, {"num_examples", key.second}, {"dice_mean", mean},
                     {"dice_std_over_draws", per_draw.size() > 1 ? std::sqrt(var / (per_draw.size() - 1)) : 0.0}});
  }
  return {{"per_task", rows}, {"mean_over_tasks", means}};
}

std::string write_report(const ProtocolResult& result, const std::string& out_dir) {
  std::filesystem::create_directories(out_dir);
  Json summary = summarize(result);
  Json rows = Json::array();
  for (const auto& r : result.scores)
    rows.push_back({{"task", r.task}, {"method", r.method}, {"case", r.case_id}, {"num_examples", r.num_examples},
                    {"draw", r.draw}, {"dice", r.dice}, {"hd95_mm", std::isfinite(r.hd95) ? Json(r.hd95) : Json("inf")},
                    {"both_empty", r.both_empty}});
  Json metrics{{"options", result.options}, {"summary", summary}, {"rows", rows}, {"seconds", result.seconds}};
  write_file_atomic(out_dir + "/metrics.json", metrics.dump(1));

  // Markdown: one table, rows = method x examples, columns = tasks + mean; Dice % mean ± std.
  std::vector<std::string> tasks;
  for (const auto& r : summary["per_task"]) {
    std::string t = r["task"];
    if (std::find(tasks.begin(), tasks.end(), t) == tasks.end()) tasks.push_back(t);
  }
  std::ostringstream md;
  const std::string dataset = result.options["dataset"];
  md << "# Evaluation: " << dataset << "\n\n"
     << "Protocol (paper §4.2): x examples drawn at random from other patients' slices containing the structure, "
     << result.options["draws"].get<int>() << " independent draws, Dice per 3D volume (2D: per image) on the file's own "
     << "grid, every slice of the volume predicted (slices without the structure included), threshold 0.5. Values are "
     << "Dice % as mean over query cases, then mean ± std over draws. Queries: " << result.options["queries"].get<int>()
     << " cases. Decoder: " << result.options["ddim_steps"].get<int>() << " DDIM steps, "
     << result.options["num_samples"].get<int>() << " sample(s). Instruction: "
     << (result.options["with_text"].get<bool>() ? "\"segment the <structure>\"" : "none") << ". Time: "
     << static_cast<int>(result.seconds) << " s.\n\n| method |";
  for (const auto& t : tasks) md << " " << t.substr(t.find('/') + 1) << " |";
  md << " mean |\n|---|";
  for (size_t i = 0; i <= tasks.size(); ++i) md << "---|";
  md << "\n";
  std::map<std::pair<std::string, int>, std::map<std::string, std::pair<double, double>>> cells;
  for (const auto& r : summary["per_task"])
    cells[{r["method"], r["num_examples"]}][r["task"]] = {r["dice_mean"], r["dice_std_over_draws"]};
  for (const auto& m : summary["mean_over_tasks"]) {
    std::pair<std::string, int> key{m["method"], m["num_examples"]};
    md << "| " << key.first << " ICL-" << key.second << " |";
    char cell[64];
    for (const auto& t : tasks) {
      auto it = cells[key].find(t);
      if (it == cells[key].end()) {
        md << " |";
        continue;
      }
      std::snprintf(cell, sizeof cell, " %.2f ± %.2f |", 100 * it->second.first, 100 * it->second.second);
      md << cell;
    }
    std::snprintf(cell, sizeof cell, " %.2f ± %.2f |\n", 100 * m["dice_mean"].get<double>(),
                  100 * m["dice_std_over_draws"].get<double>());
    md << cell;
  }
  if (dataset == "chaos_mr_t2") {
    md << "\nThe paper's Table 1 (columns liver, spleen, left kidney, right kidney, mean; its own data and "
          "resolution — ours is resampled, see ../shared/data/README.md):\n\n"
       << "| method | liver | spleen | left kidney | right kidney | mean |\n|---|---|---|---|---|---|\n"
       << kPaperChaos;
  }
  write_file_atomic(out_dir + "/report.md", md.str());
  write_file_atomic(out_dir + "/DONE", "");
  return md.str();
}

}  // namespace segicl::eval
