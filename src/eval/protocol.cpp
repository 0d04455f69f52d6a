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
#include "segicl/data/examples.h"
#include "segicl/data/preprocess.h"
#include "segicl/eval/metrics.h"
#include "segicl/infer/postprocess.h"
#include "segicl/infer/presence.h"
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

// "0.5" for 0.5, "0.25" for 0.25: the shortest text that reads back as the fraction (row labels).
std::string fraction_label(double fraction) {
  std::ostringstream text;
  text << fraction;
  return text.str();
}

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

// One Markdown table of a summary: rows = method x examples, columns = tasks + mean, Dice % mean ±
// std over draws.
void write_table(std::ostringstream& md, const Json& summary, const std::vector<std::string>& tasks,
                 const Json& options) {
  md << "| method |";
  for (const auto& t : tasks) md << " " << t.substr(t.find('/') + 1) << " |";
  md << " mean |\n|---|";
  for (size_t i = 0; i <= tasks.size(); ++i) md << "---|";
  md << "\n";
  std::map<std::pair<std::string, int>, std::map<std::string, std::pair<double, double>>> cells;
  for (const auto& r : summary["per_task"])
    cells[{r["method"], r["num_examples"]}][r["task"]] = {r["dice_mean"], r["dice_std_over_draws"]};
  for (const auto& m : summary["mean_over_tasks"]) {
    std::pair<std::string, int> key{m["method"], m["num_examples"]};
    if (key.second == kSupervisedExamples)
      md << "| " << options.at("unet").value("label", key.first) << " |";
    else
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
}

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

  // Queries: the test split, or the val split with query_split "val" (all cases of ood/eval
  // datasets either way); support: other patients (train split for train-role datasets, so a test
  // or val patient is never an example).
  if (o.query_split != "test" && o.query_split != "val")
    SEGICL_THROW(UsageError, "unknown query split '" + o.query_split + "'", "", "use test or val");
  const auto query_split =
      dataset->role == data::Role::kTrain && o.query_split == "val" ? data::Split::kVal : data::Split::kTest;
  std::vector<LoadedCase> cases;
  std::vector<bool> is_query;
  int queries = 0;
  int query_dims = 2;  // 3 when a query is a volume: the report adds the slice-restricted scores
  for (const auto& c : dataset->cases) {
    const bool query = c.split == query_split && (o.max_cases == 0 || queries < o.max_cases);
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
    if (query) query_dims = std::max(query_dims, cases.back().volume.dims);
  }
  logger->info("{}: {} query cases, {} cases loaded, {} tasks", o.dataset, queries, cases.size(), tasks.size());
  std::shared_ptr<const data::ExemplarMemory> memory;
  if (!o.memory.empty() && model) {
    memory = data::ExemplarMemory::open(o.memory);
    memory->require_fit(resolution, model->config().in_channels);
    // A memory holds train splits only, so a train-role dataset's own slices in it are never its
    // queries (those are its test split); say so in the log.
    for (const auto& d : memory->pack().datasets())
      if (d.name == o.dataset)
        logger->info("the memory holds {}'s train split; its queries are its {} split", d.name, o.query_split);
  }

  ProtocolResult result;
  result.options = {{"dataset", o.dataset}, {"num_examples", o.num_examples}, {"draws", o.draws}, {"seed", o.seed},
                    {"max_cases", o.max_cases}, {"ddim_steps", o.ddim_steps}, {"num_samples", o.num_samples},
                    {"with_text", o.with_text}, {"methods", o.methods}, {"resolution", resolution},
                    {"queries", queries}, {"query_dims", query_dims}, {"corpus", corpus.root()},
                    {"memory", memory ? o.memory : std::string()}, {"memory_examples", memory ? o.memory_examples : 0},
                    {"memory_top_up", memory && o.memory_top_up}, {"refine_examples", o.refine_examples},
                    {"postprocess", o.postprocess}, {"memory_choice", memory ? o.memory_choice : std::string()},
                    {"presence_fractions", o.presence_fractions}, {"query_split", o.query_split}};
  for (double f : o.presence_fractions)
    if (!(f > 0 && f <= 1))
      SEGICL_THROW(UsageError, "presence fraction " + std::to_string(f) + " is not in (0, 1]", "",
                   "e.g. --presence-check 0.5 keeps planes agreeing at least half as well as the best");
  std::string post_label;
  for (const auto& step : o.postprocess) post_label += "+" + step;
  if (!data::is_memory_choice(o.memory_choice))
    SEGICL_THROW(UsageError, "unknown memory choice '" + o.memory_choice + "'", "", data::memory_choices_hint());
  infer::check_postprocess_steps(o.postprocess);  // now, not after the first volume
  // Method "unet": one U-Net per patient fold, trained on every plane of the fold's support cases
  // (all tasks at once, one output channel each), predicts the fold's query cases up front.
  std::map<size_t, torch::Tensor> unet_planes;  // query case -> [N, T, R, R] probabilities
  if (std::count(o.methods.begin(), o.methods.end(), "unet") > 0) {
    std::vector<std::string> groups;
    std::vector<bool> support;
    for (const auto& c : cases) {
      groups.push_back(c.item->group);
      support.push_back(dataset->role != data::Role::kTrain || c.item->split == data::Split::kTrain);
    }
    UNetBaselineOptions unet = o.unet;
    unet.seed = o.seed;
    const auto folds = split_folds(groups, is_query, support, unet.folds, o.seed);
    Json fold_rows = Json::array();
    double total_seconds = 0;
    for (size_t k = 0; k < folds.size(); ++k) {
      std::vector<torch::Tensor> images, targets;
      Json train_ids = Json::array(), query_ids = Json::array();
      for (size_t c : folds[k].train_cases) {
        train_ids.push_back(cases[c].item->id);
        for (int64_t s = 0; s < cases[c].volume.num_slices(); ++s) {
          images.push_back(data::image_plane(cases[c].volume, s, resolution));
          auto labels = data::label_plane(cases[c].volume, s, resolution);
          std::vector<torch::Tensor> channels;
          for (const auto& task : tasks) channels.push_back(torch::isin(labels, ids_tensor(task.label_ids)));
          targets.push_back(torch::stack(channels).to(torch::kUInt8));
        }
      }
      logger->info("unet fold {}/{}: training on {} planes of {} cases, predicting {} cases", k + 1, folds.size(),
                   images.size(), folds[k].train_cases.size(), folds[k].query_cases.size());
      UNetTrainingReport report;
      auto net = train_unet(torch::stack(images), torch::stack(targets), unet, "unet-fold" + std::to_string(k), &report);
      images.clear();
      targets.clear();
      for (size_t q : folds[k].query_cases) {
        query_ids.push_back(cases[q].item->id);
        std::vector<torch::Tensor> planes;
        for (int64_t s = 0; s < cases[q].volume.num_slices(); ++s)
          planes.push_back(data::image_plane(cases[q].volume, s, resolution));
        unet_planes[q] = predict_unet(net, torch::stack(planes), o.batch_slices);
      }
      total_seconds += report.seconds;
      Json row = report.to_json();
      row["fold"] = k;
      row["train_cases"] = train_ids;
      row["query_cases"] = query_ids;
      fold_rows.push_back(row);
      logger->info("unet fold {}/{}: trained in {:.0f} s, final loss {:.4f}", k + 1, folds.size(), report.seconds,
                   report.final_loss);
    }
    result.options["unet"] = {
        {"label", folds.size() > 1 ? "supervised U-Net (" + std::to_string(folds.size()) + "-fold)"
                                   : std::string("supervised U-Net (support pool)")},
        {"steps", unet.steps}, {"batch_size", unet.batch_size}, {"learning_rate", unet.learning_rate},
        {"base_features", unet.base_features}, {"levels", unet.levels}, {"folds_requested", unet.folds},
        {"foreground_fraction", unet.foreground_fraction}, {"augment", unet.augment},
        {"tasks", [&] {
           Json names = Json::array();
           for (const auto& t : tasks) names.push_back(t.name);
           return names;
         }()},
        {"threads", torch::get_num_threads()}, {"train_seconds_total", total_seconds}, {"folds", fold_rows}};
  }

  torch::NoGradGuard no_grad;
  if (model) model->eval();

  for (size_t task_index = 0; task_index < tasks.size(); ++task_index) {
    const auto& task = tasks[task_index];
    auto ids = ids_tensor(task.label_ids);
    // A case belongs to this task unless it names its own (medscribble: every case is one task's,
    // and all of them use label 1, so without this every task would draw examples and queries from
    // all twelve).
    auto in_task = [&](const LoadedCase& c) {
      return c.item->task.empty() || dataset->name + "/" + c.item->task == task.name;
    };
    // Support pool: (case, slice) planes containing the structure.
    std::vector<std::pair<int, int64_t>> pool;
    for (size_t c = 0; c < cases.size(); ++c) {
      if (!in_task(cases[c])) continue;
      if (dataset->role == data::Role::kTrain && cases[c].item->split != data::Split::kTrain) continue;
      for (int64_t s = 0; s < cases[c].volume.num_slices(); ++s)
        if (torch::isin(data::label_plane(cases[c].volume, s, resolution), ids).sum().item<int64_t>() >= 3)
          pool.emplace_back(static_cast<int>(c), s);
    }
    const std::string instruction = o.with_text ? "segment the " + task.structure : "";
    for (int x : o.num_examples) {
      // Without examples the model's prediction depends on the draw only through a seeded memory
      // recall; otherwise draw 0's planes are every draw's (same rows, 1/draws of the time).
      const bool same_every_draw = x == 0 && !(memory && !instruction.empty() && o.memory_choice == "spread");
      std::map<size_t, std::pair<torch::Tensor, torch::Tensor>> first_draw_planes;  // query case -> draw 0's planes, agreement
      for (int draw = 0; draw < o.draws; ++draw) {
        for (size_t q = 0; q < cases.size(); ++q) {
          if (!is_query[q] || !in_task(cases[q])) continue;
          const auto& query = cases[q];
          std::mt19937_64 rng(derive_seed(o.seed, task.name + "/" + std::to_string(x) + "/" + std::to_string(draw) + "/" +
                                                      query.item->id));
          std::vector<std::pair<int, int64_t>> eligible;
          for (const auto& p : pool)
            if (cases[p.first].item->group != query.item->group) eligible.push_back(p);
          std::shuffle(eligible.begin(), eligible.end(), rng);
          if (static_cast<int>(eligible.size()) < x) {
            // A small task (medscribble's SCD has 3 images: 2 besides the query) cannot give x
            // examples: no row, said once, rather than ending the whole run.
            if (draw == 0)
              logger->warn("{}: only {} support slices outside {}'s patient, fewer than x = {}: not scored", task.name,
                           eligible.size(), query.item->id, x);
            continue;
          }
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
          // The tensor dimension of the file's [Z, Y, X] grid that the model's planes cut across.
          const int64_t plane_axis =
              query.volume.dims == 3 ? 2 - query.volume.reorientation.source_axis[query.volume.through_axis] : 0;
          // The model's planes [N, R, R] for this query, draw and x (examples, recall, refinement).
          std::vector<torch::Tensor> query_planes;
          for (int64_t s = 0; s < n; ++s) query_planes.push_back(data::image_plane(query.volume, s, resolution));
          // The context the model saw (examples, recalled pairs): the presence check reuses it.
          torch::Tensor context_images, context_masks;
          auto model_planes = [&]() {
            context_images = images;
            context_masks = masks;
            const int recall = x == 0 ? o.memory_examples : o.memory_top_up ? o.memory_examples - x : 0;
            if (memory && !instruction.empty() && recall > 0) {
              // rng() is drawn either way, so the choice does not shift later draws.
              const uint64_t recall_seed = rng();
              auto recalled = o.memory_choice == "similar"
                                  ? memory->recall_similar(instruction, recall, torch::stack(query_planes))
                                  : memory->recall(instruction, recall, recall_seed);
              if (recalled.count() > 0) {  // nothing matched: the examples (or the text) alone
                context_images = x ? torch::cat({images, recalled.images}) : recalled.images;
                context_masks = x ? torch::cat({masks, recalled.masks}) : recalled.masks;
              }
            }
            auto predict = [&](const torch::Tensor& ctx_images, const torch::Tensor& ctx_masks) {
              auto context = model->encode_context(ctx_images, ctx_masks, instruction);
              std::vector<torch::Tensor> outputs;
              for (int64_t begin = 0; begin < n; begin += o.batch_slices) {
                std::vector<torch::Tensor> batch(query_planes.begin() + begin,
                                                 query_planes.begin() + std::min(n, begin + o.batch_slices));
                models::SegmentOptions so;
                so.ddim_steps = o.ddim_steps;
                so.num_samples = o.num_samples;
                so.seed = derive_seed(o.seed, "eval-noise");
                outputs.push_back(model->segment(context, torch::stack(batch), so).probability.squeeze(1).cpu());
              }
              return torch::cat(outputs);
            };
            auto planes = predict(context_images, context_masks);
            // Self-prompting: the query's most confident planes, as predicted, join the context
            // for a second pass (they carry the query's own modality and anatomy).
            if (o.refine_examples > 0) {
              const auto chosen = data::confident_planes(planes, o.refine_examples);
              if (!chosen.empty()) {
                std::vector<torch::Tensor> own_images, own_masks;
                for (int64_t s : chosen) {
                  own_images.push_back(query_planes[s]);
                  own_masks.push_back((planes[s] > 0.5).to(torch::kFloat32).unsqueeze(0));
                }
                auto more_images = torch::stack(own_images), more_masks = torch::stack(own_masks);
                planes = predict(context_images.defined() ? torch::cat({context_images, more_images}) : more_images,
                                 context_masks.defined() ? torch::cat({context_masks, more_masks}) : more_masks);
              }
            }
            return planes;
          };
          // Reverse-prediction agreement [N] of the model's planes with the context it saw.
          auto presence_agreement = [&](const torch::Tensor& planes) {
            infer::PresenceOptions presence;
            presence.segment.ddim_steps = o.ddim_steps;
            presence.segment.num_samples = o.num_samples;
            presence.segment.seed = derive_seed(o.seed, "eval-noise");
            auto agreement = infer::reverse_agreement(*model, torch::stack(query_planes), planes, context_images,
                                                      context_masks, presence);
            if (logger->should_log(spdlog::level::debug)) {
              // Per plane: agreement, predicted and true area (model pixels): why a check keeps what it keeps.
              std::string line;
              for (int64_t s = 0; s < n; ++s) {
                const auto area = (planes[s] > 0.5).sum().item<int64_t>();
                const auto true_area = torch::isin(data::label_plane(query.volume, s, resolution), ids).sum().item<int64_t>();
                line += fmt::format(" {}:{:.2f}/{}/{}", s, agreement[s].item<double>(), area, true_area);
              }
              logger->debug("{} {} x={} draw {} agreement/area/true:{}", task.name, query.item->id, x, draw, line);
            }
            return agreement;
          };
          for (const auto& method : o.methods) {
            torch::Tensor planes;  // [N, R, R] probabilities
            torch::Tensor agreement;  // [N] presence check of the model's planes (when asked for)
            if (method == "segicl") {
              // The UniverSeg architecture has no k = 0 mode: no row rather than a failure.
              if (x == 0 && model->config().needs_examples()) continue;
              if (same_every_draw && draw > 0) {
                std::tie(planes, agreement) = first_draw_planes.at(q);
              } else {
                planes = model_planes();
                if (!o.presence_fractions.empty() && context_images.defined() && context_images.size(0) > 0)
                  agreement = presence_agreement(planes);
                if (same_every_draw) first_draw_planes[q] = {planes, agreement};
              }
            } else if (method == "atlas") {
              if (x == 0) continue;  // no examples, no atlas
              planes = (masks.mean(0) > 0.5).to(torch::kFloat32).expand({n, resolution, resolution}).contiguous();
            } else if (method == "unet") {
              // Independent of the examples: scored once per query case.
              if (x != o.num_examples.front() || draw != 0) continue;
              planes = unet_planes.at(q).select(1, static_cast<int64_t>(task_index)).contiguous();
            } else {
              SEGICL_THROW(UsageError, "unknown method '" + method + "'", "", "use segicl, atlas or unet");
            }
            auto grid = data::planes_to_source_grid(planes, query.volume);
            auto score = [&](const torch::Tensor& predicted, const std::string& label) {
              CaseScore row{task.name, label, query.item->id, method == "unet" ? kSupervisedExamples : x, draw};
              if (o.hd95) {
                auto overlap = compare(predicted, truth, query.spacing);
                row.dice = overlap.dice;
                row.hd95 = overlap.hd95;
                row.both_empty = overlap.both_empty;
              } else {
                row.dice = dice(predicted, truth);
              }
              const auto restricted = slice_scores(predicted, truth, plane_axis);
              row.dice_in_extent = restricted.dice_in_extent;
              row.mean_slice_dice = restricted.mean_slice_dice;
              result.scores.push_back(row);
            };
            const std::string label = method == "segicl" ? o.model_label : method;
            score(grid > 0.5, label);
            if (method == "segicl" && !o.postprocess.empty()) {
              // Same steps and slicing axis as the segmenter's, on the same grid.
              auto mask = data::to_label_map(grid, query.geometry, query.volume.dims, 0.5);
              infer::postprocess(mask, o.postprocess, query.volume.dims == 3 ? 2 - static_cast<int>(plane_axis) : 2);
              std::vector<uint8_t> values(mask.labels.begin(), mask.labels.end());
              score(torch::from_blob(values.data(), truth.sizes(), torch::kUInt8).to(torch::kBool), label + post_label);
            }
            // Without a context (text alone) there is nothing to check against: the rows repeat
            // the raw ones, so every x has the same set of rows.
            for (double fraction : o.presence_fractions) {
              if (method != "segicl") break;
              auto kept = agreement.defined() ? infer::drop_absent_planes(planes, agreement, fraction) : planes;
              score(data::planes_to_source_grid(kept, query.volume) > 0.5, label + "+presence" + fraction_label(fraction));
            }
          }
        }
        logger->info("{} x={} draw {}: done ({} rows)", task.name, x, draw, result.scores.size());
      }
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

Json summarize(const ProtocolResult& result, Score score) {
  auto value = [score](const CaseScore& r) {
    return score == Score::kDiceInExtent ? r.dice_in_extent : score == Score::kMeanSliceDice ? r.mean_slice_dice : r.dice;
  };
  // (task, method, x) -> draw -> dices
  std::map<std::tuple<std::string, std::string, int>, std::map<int, std::vector<double>>> groups;
  for (const auto& r : result.scores)
    if (!std::isnan(value(r))) groups[{r.task, r.method, r.num_examples}][r.draw].push_back(value(r));
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
  // 3D queries: also the scores restricted to the structure's planes (JSON and Markdown).
  const bool volumes = result.options.value("query_dims", 2) == 3;
  const Json in_extent = volumes ? summarize(result, Score::kDiceInExtent) : Json();
  const Json per_slice = volumes ? summarize(result, Score::kMeanSliceDice) : Json();
  Json rows = Json::array();
  for (const auto& r : result.scores)
    rows.push_back({{"task", r.task}, {"method", r.method}, {"case", r.case_id}, {"num_examples", r.num_examples},
                    {"draw", r.draw}, {"dice", r.dice}, {"hd95_mm", std::isfinite(r.hd95) ? Json(r.hd95) : Json("inf")},
                    {"both_empty", r.both_empty},
                    // null: no plane of the case holds the structure
                    {"dice_in_extent", std::isnan(r.dice_in_extent) ? Json() : Json(r.dice_in_extent)},
                    {"mean_slice_dice", std::isnan(r.mean_slice_dice) ? Json() : Json(r.mean_slice_dice)}});
  Json metrics{{"options", result.options}, {"summary", summary}, {"rows", rows}, {"seconds", result.seconds}};
  if (volumes) {
    metrics["summary_in_extent"] = in_extent;
    metrics["summary_slices"] = per_slice;
  }
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
     << static_cast<int>(result.seconds) << " s.\n\n";
  write_table(md, summary, tasks, result.options);
  if (volumes) {
    // The settings of the paper's comparisons, apart from the whole-volume numbers above.
    md << "\n**Within the structure's slice range** (Dice over the planes from the first to the last one "
          "holding the structure; false positives on other planes do not count: the SSL-ALPNet protocol, "
          "Ouyang et al. 2020, of the paper's Table 1 baselines):\n\n";
    write_table(md, in_extent, tasks, result.options);
    md << "\n**Mean 2D Dice over the planes holding the structure** (every plane scored alone, the paper's 2D "
          "setting):\n\n";
    write_table(md, per_slice, tasks, result.options);
  }
  if (result.options.contains("unet")) {
    // Per fold: who trained, who was predicted, how long, and its Dice per task.
    const Json& unet = result.options["unet"];
    md << "\n" << unet["label"].get<std::string>() << ": a 2D U-Net (" << unet["levels"].get<int>() << " levels, "
       << unet["base_features"].get<int>() << " base features, InstanceNorm + LeakyReLU, one sigmoid per task) trained "
       << "from scratch on every plane of the support patients of its fold only (BCE + soft Dice, Adam with poly "
       << "decay, " << unet["steps"].get<int>() << " steps of " << unet["batch_size"].get<int>() << " planes, "
       << unet["threads"].get<int>() << " thread(s)); no query patient is in the training set of the U-Net that "
       << "predicts it. Scored once per query case (it takes no examples).\n\n| fold | training cases (planes) | "
       << "query cases | train time (s) |";
    for (const auto& t : tasks) md << " " << t.substr(t.find('/') + 1) << " |";
    md << " mean |\n|---|---|---|---|";
    for (size_t i = 0; i <= tasks.size(); ++i) md << "---|";
    md << "\n";
    for (const auto& fold : unet["folds"]) {
      std::vector<std::string> queries = fold["query_cases"];
      std::map<std::string, std::vector<double>> per_task;
      for (const auto& r : result.scores)
        if (r.method == "unet" && std::find(queries.begin(), queries.end(), r.case_id) != queries.end())
          per_task[r.task].push_back(r.dice);
      char cell[96];
      std::snprintf(cell, sizeof cell, "| %d | %zu (%lld) | %zu | %.0f |", fold["fold"].get<int>(),
                    fold["train_cases"].size(), static_cast<long long>(fold["planes"].get<int64_t>()), queries.size(),
                    fold["train_seconds"].get<double>());
      md << cell;
      double sum = 0;
      int counted = 0;
      for (const auto& t : tasks) {
        const auto& dices = per_task[t];
        if (dices.empty()) {
          md << " |";
          continue;
        }
        double mean = 0;
        for (double d : dices) mean += d / dices.size();
        sum += mean;
        ++counted;
        std::snprintf(cell, sizeof cell, " %.2f |", 100 * mean);
        md << cell;
      }
      std::snprintf(cell, sizeof cell, " %.2f |\n", counted ? 100 * sum / counted : 0.0);
      md << cell;
    }
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
