// ViT + learned-query cross-attention (see vision_encoder.h).
#include "segicl/models/vision_encoder.h"

namespace segicl::models {

VisionEncoderImpl::VisionEncoderImpl(const ModelConfig &c) : config_(c) {
  const int64_t w = c.vision_width, p = c.patch_size(), T = c.num_condition_tokens;
  patch_embed_ = register_module(
      "patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, w, p).stride(p)));
  pos_ = register_parameter("pos", torch::randn({1, T, w}) * 0.02);
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.vision_layers; ++i)
    blocks_->push_back(TransformerBlock(w, c.vision_heads, c.vision_mlp_dim));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  context_queries_ =
      register_parameter("context_queries", torch::randn({1, c.tokens_per_example, w}) * 0.02);
  query_queries_ = register_parameter("query_queries", torch::randn({1, T, w}) * 0.02);
  norm_q_ = register_module("norm_q", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  norm_kv_ = register_module("norm_kv", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  cross_ = register_module("cross", Attention(w, w, c.vision_heads));
  out_proj_ = register_module("out_proj", torch::nn::Linear(w, c.d_model));
}

torch::Tensor VisionEncoderImpl::encode(const torch::Tensor &images, const torch::Tensor &queries) {
  check_shape(images, {-1, config_.in_channels, config_.resolution, config_.resolution}, "images");
  const int64_t n = images.size(0);
  auto x = patch_embed_(images).flatten(2).transpose(1, 2) + pos_;  // [N, T, w]
  for (const auto &block : *blocks_) x = block->as<TransformerBlock>()->forward(x);
  auto kv = norm_kv_(norm_(x));
  auto q = queries.expand({n, queries.size(1), queries.size(2)});
  return out_proj_(q + cross_(norm_q_(q), kv));
}

torch::Tensor VisionEncoderImpl::encode_context(const torch::Tensor &images) {
  return encode(images, context_queries_);
}

torch::Tensor VisionEncoderImpl::encode_query(const torch::Tensor &images) {
  return encode(images, query_queries_);
}

}  // namespace segicl::models
