// The vision encoder of paper §3.3: a ViT (conv patch embedding, learned
// positions, pre-LN blocks) followed by ONE randomly initialised
// cross-attention layer whose learned queries read the patch tokens. Two query
// sets: tokens_per_example queries for context images (short, so many examples
// fit the sequence) and num_condition_tokens queries for the query image (one
// per condition token, paper: 256). Outputs are projected to the transformer
// width d_model. Not CLIP: no pretrained weights, no text tower.
#pragma once

#include <torch/torch.h>

#include "segicl/models/config.h"
#include "segicl/models/layers.h"

namespace segicl::models {

class VisionEncoderImpl : public torch::nn::Module {
 public:
  explicit VisionEncoderImpl(const ModelConfig &config);
  // images [N, C, R, R] -> [N, tokens_per_example, d_model].
  torch::Tensor encode_context(const torch::Tensor &images);
  // images [B, C, R, R] -> [B, num_condition_tokens, d_model].
  torch::Tensor encode_query(const torch::Tensor &images);

 private:
  torch::Tensor encode(const torch::Tensor &images, const torch::Tensor &queries);

  ModelConfig config_;
  torch::nn::Conv2d patch_embed_{nullptr};
  torch::Tensor pos_, context_queries_, query_queries_;
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr}, norm_q_{nullptr}, norm_kv_{nullptr};
  Attention cross_{nullptr};
  torch::nn::Linear out_proj_{nullptr};
};
TORCH_MODULE(VisionEncoder);

}  // namespace segicl::models
