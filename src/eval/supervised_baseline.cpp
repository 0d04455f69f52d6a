// The supervised U-Net baseline (see supervised_baseline.h): folds, training loop, prediction.
#include "segicl/eval/supervised_baseline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/seed.h"

namespace segicl::eval {
namespace {

namespace F = torch::nn::functional;

// Shifts [C, H, W] by (dy, dx) pixels, zero fill (no wrap-around, unlike torch::roll).
torch::Tensor translate(const torch::Tensor& plane, int64_t dy, int64_t dx) {
  const int64_t h = plane.size(1), w = plane.size(2);
  const int64_t m = std::max(std::abs(dy), std::abs(dx));
  if (m == 0) return plane;
  auto padded = F::pad(plane.unsqueeze(0), F::PadFuncOptions({m, m, m, m})).squeeze(0);
  return padded.narrow(1, m - dy, h).narrow(2, m - dx, w);
}

// BCE with logits + (1 - soft Dice), Dice over the whole batch per task, averaged over tasks.
torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto bce = F::binary_cross_entropy_with_logits(logits, targets);
  auto probability = torch::sigmoid(logits);
  auto dims = std::vector<int64_t>{0, 2, 3};
  auto intersection = (probability * targets).sum(dims);
  auto total = probability.sum(dims) + targets.sum(dims);
  // +1 smoothing: a task absent from the whole batch is pushed towards an empty prediction.
  auto soft_dice = (2 * intersection + 1) / (total + 1);
  return bce + (1 - soft_dice).mean();
}

}  // namespace

std::vector<FoldSplit> split_folds(const std::vector<std::string>& groups,
                                   const std::vector<bool>& is_query,
                                   const std::vector<bool>& is_support, int folds, uint64_t seed) {
  if (groups.size() != is_query.size() || groups.size() != is_support.size())
    SEGICL_THROW(UsageError, "split_folds: groups, is_query and is_support differ in length", "",
                 "");
  std::set<std::string> query_groups, support_groups;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (is_query[i]) query_groups.insert(groups[i]);
    if (is_support[i]) support_groups.insert(groups[i]);
  }
  bool overlap = false;
  for (const auto& g : query_groups) overlap |= support_groups.count(g) > 0;
  std::vector<FoldSplit> result;
  if (!overlap) {
    // Disjoint roles: one model on the whole support pool predicts every query.
    FoldSplit fold;
    for (size_t i = 0; i < groups.size(); ++i) {
      if (is_support[i]) fold.train_cases.push_back(i);
      if (is_query[i]) fold.query_cases.push_back(i);
    }
    if (fold.train_cases.empty())
      SEGICL_THROW(UsageError, "the support pool is empty: nothing to train on", "", "");
    result.push_back(fold);
    return result;
  }
  if (folds < 2 || folds > static_cast<int>(query_groups.size()))
    SEGICL_THROW(UsageError,
                 "queries are also support patients: cross-validation needs 2 <= folds <= " +
                     std::to_string(query_groups.size()) + " (the number of query patients), got " +
                     std::to_string(folds),
                 "", "use --unet-folds 2");
  // Sorted, then shuffled by a derived seed: a pure function of (patients, seed).
  std::vector<std::string> order(query_groups.begin(), query_groups.end());
  std::mt19937_64 rng(derive_seed(seed, "unet-folds"));
  std::shuffle(order.begin(), order.end(), rng);
  std::map<std::string, int> fold_of;
  for (size_t i = 0; i < order.size(); ++i) fold_of[order[i]] = static_cast<int>(i % folds);
  result.resize(folds);
  for (size_t i = 0; i < groups.size(); ++i) {
    auto it = fold_of.find(groups[i]);
    if (is_query[i]) result[it->second].query_cases.push_back(i);
    for (int k = 0; k < folds; ++k)
      if (is_support[i] && (it == fold_of.end() || it->second != k))
        result[k].train_cases.push_back(i);
  }
  for (int k = 0; k < folds; ++k)
    if (result[k].train_cases.empty())
      SEGICL_THROW(UsageError, "U-Net fold " + std::to_string(k) + " has no training case", "",
                   "use fewer folds");
  return result;
}

config::Json UNetTrainingReport::to_json() const {
  return {{"steps", steps},
          {"planes", planes},
          {"foreground_planes", foreground_planes},
          {"train_seconds", seconds},
          {"final_loss", final_loss}};
}

models::UNet2d train_unet(const torch::Tensor& images, const torch::Tensor& targets,
                          const UNetBaselineOptions& o, const std::string& seed_name,
                          UNetTrainingReport* report) {
  auto logger = log::get("eval");
  if (images.dim() != 4 || targets.dim() != 4 || images.size(0) != targets.size(0) ||
      images.size(2) != targets.size(2) || images.size(3) != targets.size(3))
    SEGICL_THROW(ShapeError,
                 "train_unet: images [N, C, R, R] and targets [N, T, R, R] must agree, got " +
                     c10::str(images.sizes()) + " and " + c10::str(targets.sizes()),
                 "", "");
  const int64_t n = images.size(0);
  if (n == 0)
    SEGICL_THROW(DataError, "train_unet: no training planes", "", "check the support pool");
  if (o.steps < 1 || o.batch_size < 1)
    SEGICL_THROW(UsageError, "U-Net steps and batch size must be >= 1", "",
                 "e.g. --unet-steps 1000");
  const auto started = std::chrono::steady_clock::now();

  torch::manual_seed(derive_seed(o.seed, seed_name + "/init"));
  models::UNetOptions net_options;
  net_options.in_channels = images.size(1);
  net_options.out_channels = targets.size(1);
  net_options.base_features = o.base_features;
  net_options.levels = o.levels;
  models::UNet2d net(net_options);
  net->train();
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(o.learning_rate));

  auto has_foreground = (targets != 0).flatten(1).any(1).contiguous();
  auto flags = has_foreground.accessor<bool, 1>();
  std::vector<int64_t> foreground;
  for (int64_t i = 0; i < n; ++i)
    if (flags[i]) foreground.push_back(i);
  std::mt19937_64 rng(derive_seed(o.seed, seed_name + "/batches"));
  std::uniform_int_distribution<int64_t> any_plane(0, n - 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int64_t max_shift = images.size(2) / 8;
  std::uniform_int_distribution<int64_t> shift(-max_shift, max_shift);

  std::vector<double> losses;
  const int log_every = std::max(1, o.steps / 10);
  for (int step = 0; step < o.steps; ++step) {
    std::vector<torch::Tensor> batch_images, batch_targets;
    for (int b = 0; b < o.batch_size; ++b) {
      const bool pick_foreground = !foreground.empty() && unit(rng) < o.foreground_fraction;
      const int64_t index =
          pick_foreground
              ? foreground[static_cast<size_t>(unit(rng) * foreground.size()) % foreground.size()]
              : any_plane(rng);
      auto image = images[index];
      auto target = targets[index].to(torch::kFloat32);
      if (o.augment) {
        const double gamma = std::exp(std::log(0.7) + unit(rng) * (std::log(1.5) - std::log(0.7)));
        const double scale = 0.85 + 0.3 * unit(rng), offset = -0.1 + 0.2 * unit(rng);
        image = image.clamp_min(0).pow(gamma) * scale + offset;
        const int64_t dy = shift(rng), dx = shift(rng);
        image = translate(image, dy, dx);
        target = translate(target, dy, dx);
      }
      batch_images.push_back(image);
      batch_targets.push_back(target);
    }
    // nnU-Net's poly learning-rate schedule.
    const double lr = o.learning_rate * std::pow(1.0 - static_cast<double>(step) / o.steps, 0.9);
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    auto loss =
        segmentation_loss(net->forward(torch::stack(batch_images)), torch::stack(batch_targets));
    loss.backward();
    optimizer.step();
    losses.push_back(loss.item<double>());
    if ((step + 1) % log_every == 0 || step + 1 == o.steps) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      double recent = 0;
      const size_t window = std::min<size_t>(losses.size(), log_every);
      for (size_t i = losses.size() - window; i < losses.size(); ++i) recent += losses[i] / window;
      logger->info("unet {}: step {}/{} loss {:.4f} lr {:.2e} {:.0f} s (eta {:.0f} s)", seed_name,
                   step + 1, o.steps, recent, lr, elapsed,
                   elapsed / (step + 1) * (o.steps - step - 1));
    }
  }
  net->eval();
  if (report) {
    report->steps = o.steps;
    report->planes = n;
    report->foreground_planes = static_cast<int64_t>(foreground.size());
    report->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const size_t window = std::min<size_t>(losses.size(), 50);
    report->final_loss = 0;
    for (size_t i = losses.size() - window; i < losses.size(); ++i)
      report->final_loss += losses[i] / window;
  }
  return net;
}

torch::Tensor predict_unet(models::UNet2d& net, const torch::Tensor& images, int batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::vector<torch::Tensor> outputs;
  const int64_t step = std::max(1, batch);
  for (int64_t begin = 0; begin < images.size(0); begin += step)
    outputs.push_back(torch::sigmoid(
        net->forward(images.narrow(0, begin, std::min(step, images.size(0) - begin)))));
  return torch::cat(outputs);
}

}  // namespace segicl::eval
