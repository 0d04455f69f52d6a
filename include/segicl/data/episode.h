// An episode batch: the unit every model consumes for training and evaluation. Produced by the
// episode sampler (src/data) and by the inference layer from user files. Plain tensors, no logic.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace segicl::data {

// B episodes, each with up to K context pairs and one query. Images are float32 in [0, 1]
// (after the preprocessing of preprocess.h), masks float32 in {0, 1}.
struct EpisodeBatch {
  torch::Tensor query_images;    // [B, C, H, W]
  torch::Tensor query_masks;     // [B, 1, H, W]; undefined when unknown (inference)
  torch::Tensor context_images;  // [B, K, C, H, W]; K may be 0
  torch::Tensor context_masks;   // [B, K, 1, H, W]
  torch::Tensor context_valid;   // [B, K] bool: false marks padding when episodes have fewer pairs
  std::vector<std::string> instructions;  // B strings, may be empty ("" = no text)
  std::vector<std::string> task_names;    // B task names ("btcv_ct/liver"), informative only

  int64_t batch_size() const { return query_images.defined() ? query_images.size(0) : 0; }
  int64_t num_context() const { return context_images.defined() ? context_images.size(1) : 0; }

  // Moves every tensor to `device` (non_blocking where possible).
  EpisodeBatch to(const torch::Device& device) const;
};

}  // namespace segicl::data
