// Decoder ablation: condition tokens of true masks -> DDIM -> decoder (see decoder_ablation.h).
#include "segicl/eval/decoder_ablation.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <sstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/seed.h"
#include "segicl/eval/metrics.h"

namespace segicl::eval {
using config::Json;

DecoderAblationResult run_decoder_ablation(models::SegICLModelImpl& model, const data::Pack& pack,
                                           const DecoderAblationOptions& o) {
  const auto& c = model.config();
  if (c.is_crossconv())
    SEGICL_THROW(UsageError, "the crossconv architecture has no diffusion decoder to ablate", "",
                 "pass a paper-architecture checkpoint (e.g. models/segicl-cpu.pt)");
  if (pack.resolution() != c.resolution || pack.channels() != c.in_channels)
    SEGICL_THROW(UsageError,
                 "pack is " + std::to_string(pack.resolution()) + "² with " + std::to_string(pack.channels()) +
                     " channel(s), the model wants " + std::to_string(c.resolution) + "² with " +
                     std::to_string(c.in_channels),
                 "", "pack the data for this model (segicl pack --resolution)");
  for (bool hint : o.hints)
    if (hint && !c.use_image_hint)
      SEGICL_THROW(UsageError, "the model was built without the query-image hint", "", "ablate with --hints off");
  if (o.slices < 1 || o.batch < 1) SEGICL_THROW(UsageError, "slices and batch must be >= 1", "", "");

  // Seeded choice of (slice, task) positives, the same for every variant.
  std::vector<std::pair<int32_t, size_t>> positives;
  for (size_t t = 0; t < pack.tasks().size(); ++t)
    for (int32_t s : pack.tasks()[t].positives) positives.emplace_back(s, t);
  if (positives.empty()) SEGICL_THROW(DataError, "the pack holds no positive slice", "", "use a val or eval pack");
  std::mt19937_64 rng(derive_seed(o.seed, "decoder-ablation"));
  std::shuffle(positives.begin(), positives.end(), rng);
  positives.resize(std::min<size_t>(positives.size(), o.slices));

  torch::NoGradGuard no_grad;
  model.eval();
  const auto device = model.device();
  const int64_t n = static_cast<int64_t>(positives.size());
  std::vector<torch::Tensor> images, masks, keywords;
  Json tasks = Json::array();
  for (const auto& [slice, t] : positives) {
    const auto& task = pack.tasks()[t];
    images.push_back(pack.images()[slice].to(torch::kFloat32) / 255.0);
    auto ids = torch::tensor(std::vector<int64_t>(task.label_ids.begin(), task.label_ids.end())).to(torch::kUInt8);
    masks.push_back(torch::isin(pack.labels()[slice], ids).to(torch::kFloat32).unsqueeze(0));
    keywords.push_back(model.encode_context({}, {}, "segment the " + task.structure).keyword);
    tasks.push_back(task.name);
  }
  auto all_images = torch::stack(images), all_masks = torch::stack(masks);
  auto tokens = model.condition_encoder->forward(all_masks.to(device));
  auto all_keywords = torch::cat(keywords);

  DecoderAblationResult result;
  auto logger = log::get("eval");
  for (bool hint : o.hints) {
    for (int steps : o.ddim_steps) {
      if (steps < 1) SEGICL_THROW(UsageError, "DDIM steps must be >= 1", "", "");
      models::SegmentOptions so;
      so.ddim_steps = steps;
      std::vector<double> dices;
      double seconds = 0;
      for (int64_t begin = 0; begin < n; begin += o.batch) {
        const int64_t end = std::min(n, begin + o.batch);
        so.seed = derive_seed(o.seed, "decoder-noise/" + std::to_string(begin));
        const auto started = std::chrono::steady_clock::now();
        auto probability = model
                               .decode_condition(tokens.slice(0, begin, end), all_keywords.slice(0, begin, end),
                                                 hint ? all_images.slice(0, begin, end) : torch::Tensor(), so)
                               .probability.cpu();
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        for (int64_t i = begin; i < end; ++i)
          dices.push_back(dice(probability[i - begin] > 0.5, all_masks[i] > 0.5));
      }
      double mean = 0, var = 0;
      for (double d : dices) mean += d / dices.size();
      for (double d : dices) var += (d - mean) * (d - mean);
      DecoderAblationRow row{steps, hint, mean, dices.size() > 1 ? std::sqrt(var / (dices.size() - 1)) : 0.0,
                             1000.0 * seconds / n, dices};
      logger->info("decoder: {} DDIM steps, hint {}: Dice {:.3f}, {:.1f} ms per slice", steps, hint ? "on" : "off",
                   row.dice_mean, row.ms_per_slice);
      result.rows.push_back(row);
    }
  }
  result.options = {{"ddim_steps", o.ddim_steps}, {"hints", o.hints},        {"slices", n},
                    {"batch", o.batch},           {"seed", o.seed},          {"tasks", tasks},
                    {"threads", torch::get_num_threads()},                   {"device", device.str()},
                    {"use_image_hint", c.use_image_hint}, {"num_condition_tokens", c.num_condition_tokens}};
  return result;
}

std::string write_decoder_report(const DecoderAblationResult& result, const std::string& out_dir) {
  std::filesystem::create_directories(out_dir);
  Json rows = Json::array();
  for (const auto& r : result.rows)
    rows.push_back({{"ddim_steps", r.ddim_steps}, {"hint", r.hint}, {"dice_mean", r.dice_mean},
                    {"dice_std_over_slices", r.dice_std}, {"ms_per_slice", r.ms_per_slice}, {"dices", r.dices}});
  write_file_atomic(out_dir + "/metrics.json", Json{{"options", result.options}, {"rows", rows}}.dump(1));
  std::ostringstream md;
  md << "# Decoder ablation\n\nMasks of " << result.options["slices"].get<int64_t>()
     << " positive pack slices encoded by the model's condition encoder and decoded back (latent DDIM, then the "
        "mask decoder); Dice per slice at 0.5, mean ± std over slices; time per slice of the decoder alone ("
     << result.options["threads"].get<int>() << " thread(s), " << result.options["device"].get<std::string>()
     << ").\n\n| DDIM steps | query-image hint | Dice % | ms per slice |\n|---|---|---|---|\n";
  char line[128];
  for (const auto& r : result.rows) {
    std::snprintf(line, sizeof line, "| %d | %s | %.2f ± %.2f | %.1f |\n", r.ddim_steps, r.hint ? "on" : "off",
                  100 * r.dice_mean, 100 * r.dice_std, r.ms_per_slice);
    md << line;
  }
  // Paired over the same slices and noise: on - off per step count.
  bool header = false;
  for (const auto& on : result.rows) {
    if (!on.hint) continue;
    for (const auto& off : result.rows) {
      if (off.hint || off.ddim_steps != on.ddim_steps || off.dices.size() != on.dices.size() || on.dices.size() < 2)
        continue;
      const size_t n = on.dices.size();
      double mean = 0, var = 0;
      for (size_t i = 0; i < n; ++i) mean += (on.dices[i] - off.dices[i]) / n;
      for (size_t i = 0; i < n; ++i) var += std::pow(on.dices[i] - off.dices[i] - mean, 2) / (n - 1);
      if (!header) {
        md << "\nHint on minus off, paired over the same slices and noise (Dice points, ± standard error):\n\n"
           << "| DDIM steps | on - off |\n|---|---|\n";
        header = true;
      }
      std::snprintf(line, sizeof line, "| %d | %+.2f ± %.2f |\n", on.ddim_steps, 100 * mean, 100 * std::sqrt(var / n));
      md << line;
    }
  }
  write_file_atomic(out_dir + "/report.md", md.str());
  return md.str();
}

}  // namespace segicl::eval
