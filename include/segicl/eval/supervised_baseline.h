// The supervised upper bound of the evaluation (issue 4, baseline 3): a plain 2D U-Net
// (models/unet.h) trained from scratch on every plane of the evaluated dataset's support pool,
// with patient-level cross-validation so that no query patient is ever in the training set of
// the U-Net that predicts it. The protocol (protocol.h, method "unet") scores its predictions
// with the same code as the few-shot model. Not a general trainer (see train/): no checkpoint,
// no resume; the weights live for one evaluation run.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "segicl/core/config.h"
#include "segicl/models/unet.h"

namespace segicl::eval {

struct UNetBaselineOptions {
  int steps = 1000;                      // optimizer steps per fold (the compute budget)
  int batch_size = 8;                    // planes per step
  double learning_rate = 1e-3;           // Adam, decayed by nnU-Net's poly schedule (1 - t/T)^0.9
  int base_features = 32;                // U-Net width of the first level
  int levels = 4;                        // U-Net resolution levels (3 poolings: 128 -> 16)
  int folds = 2;                         // patient folds when queries are also support patients
  double foreground_fraction = 1.0 / 3;  // share of each batch drawn from planes with foreground
                                         // (nnU-Net's oversampling; 0 = uniform over planes)
  bool augment = true;                   // intensity (gamma, scale, shift) + translation <= 1/8 R;
                                         // no flips: left and right kidney are lateral labels
  uint64_t seed = 0;                     // folds, init and batches derive from it by name
  int predict_batch = 32;                // planes per forward pass at prediction
};

// One fold of the cross-validation: the U-Net trained on `train_cases` predicts `query_cases`
// (indices into the case list given to split_folds, ascending).
struct FoldSplit {
  std::vector<size_t> train_cases, query_cases;
};

// Patient-level folds. groups[i] is case i's patient, is_query[i] / is_support[i] its roles.
// When no query patient is also a support patient (train-role datasets: support = train split,
// queries = test split) there is one fold: train on every support case, predict every query.
// Otherwise the query patients (sorted, shuffled by derive_seed(seed, "unet-folds")) are dealt
// round-robin into `folds` folds; fold k predicts the queries of its patients and trains on the
// support cases of every other patient. Guarantee: no training case of a fold shares a patient
// with one of its queries. UsageError if folds < 2 is asked for with overlapping roles or a fold
// would have no training case; the vectors must have equal sizes (UsageError).
std::vector<FoldSplit> split_folds(const std::vector<std::string>& groups,
                                   const std::vector<bool>& is_query,
                                   const std::vector<bool>& is_support, int folds, uint64_t seed);

struct UNetTrainingReport {
  int steps = 0;
  int64_t planes = 0, foreground_planes = 0;
  double seconds = 0;     // wall-clock training time
  double final_loss = 0;  // mean loss over the last 50 steps (BCE + soft Dice)
  config::Json to_json() const;
};

// Trains a fresh U-Net. images [N, C, R, R] float in [0, 1]; targets [N, T, R, R] (any dtype,
// non-zero = foreground), one channel per task. Loss: BCE with logits + (1 - soft Dice), the
// Dice taken over the whole batch per task and averaged over tasks (nnU-Net's batch Dice).
// `seed_name` separates the folds' streams. Deterministic for a given seed and thread count.
// ShapeError for mismatched shapes, DataError for N = 0. Not thread-safe (seeds torch's global
// generator for the initial weights).
models::UNet2d train_unet(const torch::Tensor& images, const torch::Tensor& targets,
                          const UNetBaselineOptions& options, const std::string& seed_name,
                          UNetTrainingReport* report = nullptr);

// Probabilities [N, T, R, R] (sigmoid of the logits) of images [N, C, R, R], in eval mode, no grad.
torch::Tensor predict_unet(models::UNet2d& net, const torch::Tensor& images, int batch = 32);

}  // namespace segicl::eval
