// The shared condition encoder (paper §3.2/3.3): a 4-layer MLP over
// non-overlapping mask patches, giving the tokens c_t that condition the
// diffusion decoder (stage 1) and that the multi-modal encoder regresses (stage
// 2, Eq. 5). Also the keyword encoder c_k of Eq. 6. Neither sees images: the
// condition encoder is a function of the mask alone.
#pragma once

#include <torch/torch.h>

#include "segicl/models/config.h"

namespace segicl::models {

class ConditionEncoderImpl : public torch::nn::Module {
 public:
  explicit ConditionEncoderImpl(const ModelConfig &config);

  // mask [B, 1, R, R] float in [0, 1] -> tokens [B, T, cond_dim] in row-major
  // patch order, layer-normalised (no affine) so the Eq. 5 targets have unit
  // scale. ShapeError on bad input.
  torch::Tensor forward(const torch::Tensor &mask);

  // Average-pools tokens [B, T, d] on their g x g grid to `num_tokens` (a
  // perfect square) tokens [B, num_tokens, d]: the short form used for context
  // masks.
  torch::Tensor pool(const torch::Tensor &tokens, int64_t num_tokens) const;

 private:
  int64_t resolution_, grid_, patch_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, fc3_{nullptr}, fc4_{nullptr};
  torch::Tensor pos_;
};
TORCH_MODULE(ConditionEncoder);

// c_k: mean of the instruction's byte-token embeddings through a linear layer;
// exactly zero for an instruction without bytes (so "no text" is a fixed,
// learnable-free point).
class KeywordEncoderImpl : public torch::nn::Module {
 public:
  explicit KeywordEncoderImpl(const ModelConfig &config);
  // ids [B, L] int64 tokenizer ids (specials and PAD are ignored) -> [B,
  // cond_dim].
  torch::Tensor forward(const torch::Tensor &ids);

 private:
  torch::nn::Embedding embed_{nullptr};
  torch::nn::Linear proj_{nullptr};
};
TORCH_MODULE(KeywordEncoder);

}  // namespace segicl::models
