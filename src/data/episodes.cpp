// Episode sampler: real tasks from a pack, synthetic tasks, augmentation — all batched in torch so
// sampling stays far cheaper than a training step. Random numbers are drawn on the host; the
// arithmetic runs where compute_on() put it (see episodes.h).
#include "segicl/data/episodes.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "segicl/core/error.h"
#include "segicl/core/seed.h"

namespace segicl::data {
namespace F = torch::nn::functional;

namespace {

torch::Tensor upsample(const torch::Tensor& x, int64_t size) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size, size})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

// Identity sampling grid [N, R, R, 2] in grid_sample's [-1, 1] coordinates.
torch::Tensor identity_grid(int64_t n, int64_t r, const torch::Device& device) {
  auto theta = torch::tensor({1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f}).to(device).view({1, 2, 3}).expand({n, 2, 3});
  return F::affine_grid(theta, {n, 1, r, r}, false);
}

torch::Tensor warp(const torch::Tensor& x, const torch::Tensor& grid, bool nearest_mask) {
  auto out = F::grid_sample(x, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
  return nearest_mask ? (out > 0.5).to(x.dtype()) : out;
}

double uniform(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }

// Draws from the host generator moved to where the arithmetic runs. Drawing on the host keeps one
// random stream for every device: the same seed gives the same episodes on CPU and CUDA (up to the
// devices' float kernels), and the sampler state stays the host RNG's text.
struct HostDraws {
  torch::Generator& generator;
  torch::Device device;
  torch::Tensor rand(at::IntArrayRef sizes) const { return torch::rand(sizes, generator).to(device); }
  torch::Tensor randn(at::IntArrayRef sizes) const { return torch::randn(sizes, generator).to(device); }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> synthetic_task(int subjects, int resolution, torch::Generator& gen,
                                                       const torch::Device& device) {
  const int64_t s = subjects, r = resolution;
  const HostDraws draw{gen, device};
  const int64_t num_labels = 2 + torch::randint(5, {1}, gen).item<int64_t>();
  const int64_t grid = 4 + torch::randint(5, {1}, gen).item<int64_t>();
  // One label template per task, perturbed and deformed per subject (UniverSeg §3.3 style).
  auto base = draw.randn({1, num_labels, grid, grid});
  auto logits = base + 0.35 * draw.randn({s, num_labels, grid, grid});
  logits = upsample(logits, r);
  auto displacement = upsample(draw.randn({s, 2, 4, 4}) * 0.08, r).permute({0, 2, 3, 1});
  logits = warp(logits, identity_grid(s, r, device) + displacement, false);
  auto labels = logits.argmax(1);  // [S, R, R]

  auto means = draw.rand({1, num_labels}) + 0.05 * draw.randn({s, num_labels});
  auto image = means.gather(1, labels.view({s, -1})).view({s, 1, r, r});
  auto texture = upsample(draw.randn({s, 1, r / 8, r / 8}), r) * (0.1 * torch::rand({1}, gen).item<float>());
  image = image + texture;
  if (torch::rand({1}, gen).item<float>() < 0.5f)
    image = F::avg_pool2d(image, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
  image = image + draw.randn(image.sizes()) * (0.04 * torch::rand({1}, gen).item<float>());
  image = image.clamp(0, 1);
  const int64_t target = torch::randint(num_labels, {1}, gen).item<int64_t>();
  auto masks = (labels == target).unsqueeze(1).to(torch::kFloat32);
  return {image, masks};
}

std::string make_instruction(const std::string& structure, const std::string& modality,
                             const std::string& region, std::mt19937_64& rng) {
  const std::string where = region.empty() ? "" : " " + region;
  const std::string mod = modality.empty() ? "" : " " + modality;
  const std::vector<std::string> templates = {
      "segment the " + structure,
      "Please segment the " + structure + " in this" + where + mod + " image",
      structure,
      "find the " + structure,
      "Segment " + structure + " in the" + mod + " image.",
      "delineate the " + structure + (region.empty() ? "" : " (" + region + ")"),
      "Where is the " + structure + "?",
      mod.empty() ? "segment the " + structure : modality + ": " + structure,
  };
  return templates[std::uniform_int_distribution<size_t>(0, templates.size() - 1)(rng)];
}

EpisodeSampler::EpisodeSampler(std::shared_ptr<const Pack> pack, EpisodeOptions options, uint64_t seed,
                               bool allow_eval_pack)
    : pack_(std::move(pack)), options_(options), rng_(derive_seed(seed, "episodes")) {
  if (!pack_) SEGICL_THROW(UsageError, "episode sampler needs a pack", "", "");
  if (pack_->purpose() == PackPurpose::kEval && !allow_eval_pack)
    SEGICL_THROW(UsageError, "an eval pack cannot feed training episodes", "",
                 "build a training pack with `segicl pack --purpose train`");
  if (options_.min_context < 0 || options_.max_context < options_.min_context)
    SEGICL_THROW(UsageError, "need 0 <= min_context <= max_context", "", "");
  for (size_t t = 0; t < pack_->tasks().size(); ++t) {
    const auto& task = pack_->tasks()[t];
    std::vector<int32_t> groups;
    for (int32_t s : task.positives) groups.push_back(pack_->slice_group()[s]);
    std::sort(groups.begin(), groups.end());
    if (std::unique(groups.begin(), groups.end()) - groups.begin() >= 2) usable_tasks_.push_back(static_cast<int>(t));
  }
  if (usable_tasks_.empty() && options_.synthetic_fraction < 1.0)
    SEGICL_THROW(DataError, "no task in the pack has positives in two patients", "",
                 "pack more cases, or train on synthetic tasks only (synthetic_fraction = 1)");
  images_ = pack_->images();
  labels_ = pack_->labels();
}

void EpisodeSampler::compute_on(const torch::Device& device) {
  device_ = device;
  // The whole pack moves once (uint8: 0.13 GB of images and labels for the training pool at
  // 128^2), so a batch reads its slices there instead of crossing the bus as float32 episodes.
  images_ = pack_->images().to(device);
  labels_ = pack_->labels().to(device);
}

EpisodeBatch EpisodeSampler::sample(int batch_size) {
  const int64_t b = batch_size, kmax = options_.max_context, n = kmax + 1;
  const int64_t pr = pack_->resolution(), c = pack_->channels(), r = options_.resolution;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(rng_());
  const auto on_device = torch::TensorOptions().device(device_);

  std::vector<int64_t> slice_of(b * n, -1);      // pack slice per slot, -1 = none
  std::vector<int64_t> task_of(b, -1);           // real task per episode, -1 = synthetic
  std::vector<int64_t> context_count(b, 0);
  EpisodeBatch batch;
  batch.instructions.resize(b);
  batch.task_names.resize(b);
  auto images = torch::zeros({b, n, c, r, r}, on_device);
  auto masks = torch::zeros({b, n, 1, r, r}, on_device);

  for (int64_t e = 0; e < b; ++e) {
    int64_t k = std::uniform_int_distribution<int64_t>(options_.min_context, kmax)(rng_);
    const bool synthetic = usable_tasks_.empty() || uniform(rng_) < options_.synthetic_fraction;
    if (synthetic) {
      auto [syn_images, syn_masks] = synthetic_task(static_cast<int>(k + 1), static_cast<int>(r), gen, device_);
      for (int64_t i = 0; i < k; ++i) {
        images[e][i].copy_(syn_images[i].expand({c, r, r}));
        masks[e][i].copy_(syn_masks[i]);
      }
      images[e][kmax].copy_(syn_images[k].expand({c, r, r}));
      masks[e][kmax].copy_(syn_masks[k]);
      context_count[e] = k;
      batch.task_names[e] = "synthetic";
      batch.instructions[e] = "";  // a synthetic task has no name: only the examples define it
      continue;
    }
    const int t = usable_tasks_[std::uniform_int_distribution<size_t>(0, usable_tasks_.size() - 1)(rng_)];
    const auto& task = pack_->tasks()[t];
    const auto& pool = (!task.negatives.empty() && uniform(rng_) < options_.empty_query_fraction) ? task.negatives
                                                                                                   : task.positives;
    const int32_t query = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng_)];
    const int32_t query_group = pack_->slice_group()[query];
    // Context from other patients only (never the query's own group), distinct slices.
    std::vector<int32_t> chosen;
    for (int attempt = 0; attempt < 8 * k + 16 && static_cast<int64_t>(chosen.size()) < k; ++attempt) {
      int32_t s = task.positives[std::uniform_int_distribution<size_t>(0, task.positives.size() - 1)(rng_)];
      if (pack_->slice_group()[s] == query_group) continue;
      if (std::find(chosen.begin(), chosen.end(), s) != chosen.end()) continue;
      chosen.push_back(s);
    }
    for (size_t i = 0; i < chosen.size(); ++i) slice_of[e * n + i] = chosen[i];
    slice_of[e * n + kmax] = query;
    task_of[e] = t;
    context_count[e] = static_cast<int64_t>(chosen.size());
    const auto& dataset = pack_->datasets()[task.dataset];
    batch.task_names[e] = task.name;
    batch.instructions[e] = (context_count[e] > 0 && uniform(rng_) < options_.text_dropout)
                                ? ""
                                : make_instruction(task.structure, dataset.modality, dataset.region, rng_);
  }

  // Gather every real slot in one indexed read, binarise labels through a per-slot lookup table.
  std::vector<int64_t> slots, sources;
  for (int64_t i = 0; i < b * n; ++i)
    if (slice_of[i] >= 0) slots.push_back(i), sources.push_back(slice_of[i]);
  if (!slots.empty()) {
    auto source_index = torch::tensor(sources).to(device_);
    auto slot_index = torch::tensor(slots).to(device_);
    auto real_images = images_.index_select(0, source_index).to(torch::kFloat32).div_(255.0);
    auto real_labels = labels_.index_select(0, source_index).to(torch::kLong);
    // Filled on the host: one tensor op per entry would cost more than the whole gather.
    std::vector<float> lookup(slots.size() * 256, 0.0f);
    for (size_t j = 0; j < slots.size(); ++j)
      for (int id : pack_->tasks()[task_of[slots[j] / n]].label_ids)
        if (id >= 0 && id < 256) lookup[j * 256 + id] = 1.0f;
    auto table = torch::from_blob(lookup.data(), {static_cast<int64_t>(slots.size()), 256}, torch::kFloat32)
                     .to(device_);
    auto real_masks = table.gather(1, real_labels.view({static_cast<int64_t>(slots.size()), -1}))
                          .view({-1, 1, pr, pr});
    if (pr != r) {
      auto resize = [&](const torch::Tensor& x) {
        auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{r, r});
        return pr > r ? F::interpolate(x, options.mode(torch::kArea))
                      : F::interpolate(x, options.mode(torch::kBilinear).align_corners(false));
      };
      real_images = resize(real_images);
      real_masks = (resize(real_masks) > 0.5).to(torch::kFloat32);
    }
    images.view({b * n, c, r, r}).index_copy_(0, slot_index, real_images);
    masks.view({b * n, 1, r, r}).index_copy_(0, slot_index, real_masks);
  }
  if (options_.augment) augment(images, masks, gen);

  auto valid = torch::zeros({b, kmax}, torch::kBool);
  for (int64_t e = 0; e < b; ++e)
    if (context_count[e] > 0) valid[e].slice(0, 0, context_count[e]).fill_(true);
  valid = valid.to(device_);
  auto valid5 = valid.view({b, kmax, 1, 1, 1}).to(torch::kFloat32);
  batch.context_images = images.slice(1, 0, kmax) * valid5;
  batch.context_masks = masks.slice(1, 0, kmax) * valid5;
  batch.context_valid = valid;
  batch.query_images = images.select(1, kmax).contiguous();
  batch.query_masks = masks.select(1, kmax).contiguous();
  return batch;
}

void EpisodeSampler::augment(torch::Tensor& images, torch::Tensor& masks, torch::Generator& gen) {
  const auto& a = options_.augmentation;
  const int64_t b = images.size(0), n = images.size(1), c = images.size(2), r = images.size(3);
  const HostDraws draw{gen, device_};
  auto per_task = [&](double p) { return (draw.rand({b, 1, 1, 1, 1}) < p); };
  // Task-level: the same for query and context, so the task stays consistent within an episode.
  auto transpose = per_task(a.transpose_probability);
  images = torch::where(transpose, images.transpose(-1, -2), images);
  masks = torch::where(transpose, masks.transpose(-1, -2), masks);
  for (int64_t dim : {-1, -2}) {
    auto flip = per_task(a.flip_probability);
    images = torch::where(flip, images.flip({dim}), images);
    masks = torch::where(flip, masks.flip({dim}), masks);
  }
  auto invert = per_task(a.invert_probability);
  images = torch::where(invert, 1.0 - images, images);
  auto swap = per_task(a.swap_probability);
  masks = torch::where(swap, 1.0 - masks, masks);
  auto gamma = torch::exp((draw.rand({b, 1, 1, 1, 1}) * 2 - 1) * std::log1p(a.gamma_range));
  auto contrast = 1.0 + (draw.rand({b, 1, 1, 1, 1}) * 2 - 1) * a.contrast_range;
  auto brightness = (draw.rand({b, 1, 1, 1, 1}) * 2 - 1) * (a.contrast_range / 2);
  images = (images.clamp_min(0).pow(gamma) * contrast + brightness).clamp(0, 1);

  // Geometry: per-image affine plus a task-level smooth elastic field, in one resampling.
  const int64_t m = b * n;
  auto angle = (draw.rand({m}) * 2 - 1) * (a.rotation_degrees * M_PI / 180.0);
  auto scale = 1.0 + (draw.rand({m}) * 2 - 1) * a.scale_range;
  auto shift = (draw.rand({m, 2}) * 2 - 1) * (2 * a.translate_fraction);
  auto cos_a = torch::cos(angle) / scale, sin_a = torch::sin(angle) / scale;
  auto theta = torch::stack({cos_a, -sin_a, shift.select(1, 0), sin_a, cos_a, shift.select(1, 1)}, 1).view({m, 2, 3});
  auto grid = F::affine_grid(theta, {m, 1, r, r}, false);
  auto field = upsample(draw.randn({b, 2, 4, 4}) * (2 * a.elastic_strength), r).permute({0, 2, 3, 1});
  grid = grid + field.unsqueeze(1).expand({b, n, r, r, 2}).reshape({m, r, r, 2});
  images = warp(images.reshape({m, c, r, r}), grid, false);
  masks = warp(masks.reshape({m, 1, r, r}), grid, true);
  auto sigma = draw.rand({m, 1, 1, 1}) * a.noise_std;
  images = (images + draw.randn(images.sizes()) * sigma).clamp(0, 1).view({b, n, c, r, r});
  masks = masks.view({b, n, 1, r, r});
}

std::string EpisodeSampler::state() const {
  std::ostringstream out;
  out << rng_;
  return out.str();
}

void EpisodeSampler::restore(const std::string& state) {
  std::istringstream in(state);
  in >> rng_;
  if (in.fail()) SEGICL_THROW(FormatError, "corrupt episode sampler state", "", "start without --resume");
}

}  // namespace segicl::data
