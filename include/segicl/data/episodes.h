// Episode sampling for in-context training: a task, a query slice and k context slices from other
// patients, an instruction string, task-level and per-image augmentation, and UniverSeg-style
// synthetic tasks mixed in. Produces EpisodeBatch. Not a data loader for evaluation (see eval).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "segicl/data/episode.h"
#include "segicl/data/pack.h"

namespace segicl::data {

struct AugmentOptions {
  double flip_probability = 0.5;         // per axis, task-level (query and context alike)
  double transpose_probability = 0.5;    // with flips: all 8 right-angle symmetries
  double invert_probability = 0.15;      // intensity inversion, task-level
  double swap_probability = 0.05;        // foreground/background swap, task-level
  double gamma_range = 0.4;              // task-level gamma in [1/(1+g), 1+g]
  double contrast_range = 0.2;           // task-level contrast in [1-c, 1+c], brightness +-c/2
  double elastic_strength = 0.03;        // task-level smooth displacement, fraction of the image
  double rotation_degrees = 12.0;        // per-image affine
  double scale_range = 0.1;              // per-image scale in [1-s, 1+s]
  double translate_fraction = 0.05;      // per-image shift
  double noise_std = 0.03;               // per-image Gaussian noise std upper bound
};

struct EpisodeOptions {
  int resolution = 128;               // output size (the pack is resized on the fly if it differs)
  int min_context = 0;                // k drawn uniformly in [min_context, max_context] per episode
  int max_context = 8;
  double synthetic_fraction = 0.3;    // share of episodes that are synthetic tasks
  double empty_query_fraction = 0.05; // share of real queries drawn from slices without the task
  double text_dropout = 0.3;          // probability of no instruction when k > 0
  bool augment = true;
  AugmentOptions augmentation;
};

// A fresh synthetic task: `subjects` images + masks of one random label structure.
// images [S, 1, R, R] in [0, 1], masks [S, 1, R, R] in {0, 1}, on `device`; the random numbers
// come from the host `generator` whatever the device.
std::pair<torch::Tensor, torch::Tensor> synthetic_task(int subjects, int resolution, torch::Generator& generator,
                                                       const torch::Device& device = torch::kCPU);

// An instruction for a task (templates over structure, modality, region); "" never comes out.
std::string make_instruction(const std::string& structure, const std::string& modality,
                             const std::string& region, std::mt19937_64& rng);

// Draws episode batches. One sampler per thread (not thread-safe); the pack is shared read-only.
class EpisodeSampler {
 public:
  // REQUIRES: a kTrain or kVal pack; an eval pack throws UsageError unless allow_eval_pack (used
  // only by evaluation code and tests). Throws DataError if no task has two groups.
  EpisodeSampler(std::shared_ptr<const Pack> pack, EpisodeOptions options, uint64_t seed,
                 bool allow_eval_pack = false);

  EpisodeBatch sample(int batch_size);

  // Where sample() does its arithmetic (gathers, resampling, augmentation) and leaves the batch.
  // The default, the CPU, takes 0.8 s per batch of 64 episodes (k <= 8) on one core here
  // (bench_data), and session 12's GPU run, sampling there, trained at ~100 episodes/s on 16
  // cores. On CUDA the pack is copied to the device once; a batch costs kernels plus host draws.
  // Random numbers are always drawn on the host from this sampler's stream, so state() / restore()
  // and the episodes a seed gives do not depend on the device (values agree up to float kernels).
  void compute_on(const torch::Device& device);

  // Exact-resume support: the sampler's RNG state as text, and its restore.
  std::string state() const;
  void restore(const std::string& state);

  const EpisodeOptions& options() const { return options_; }

 private:
  std::shared_ptr<const Pack> pack_;
  EpisodeOptions options_;
  std::mt19937_64 rng_;
  std::vector<int> usable_tasks_;
  torch::Device device_ = torch::kCPU;
  torch::Tensor images_, labels_;  // the pack's slices, on device_
  void augment(torch::Tensor& images, torch::Tensor& masks, torch::Generator& generator);
};

}  // namespace segicl::data
