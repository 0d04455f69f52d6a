// Condition encoder and keyword encoder (see condition_encoder.h).
#include "segicl/models/condition_encoder.h"

#include <cmath>

#include "segicl/models/layers.h"
#include "segicl/models/tokenizer.h"

namespace segicl::models {

ConditionEncoderImpl::ConditionEncoderImpl(const ModelConfig &c)
    : resolution_(c.resolution), grid_(c.token_grid()), patch_(c.patch_size()) {
  const int64_t h = c.cond_hidden;
  fc1_ = register_module("fc1", torch::nn::Linear(patch_ * patch_, h));
  fc2_ = register_module("fc2", torch::nn::Linear(h, h));
  fc3_ = register_module("fc3", torch::nn::Linear(h, h));
  fc4_ = register_module("fc4", torch::nn::Linear(h, c.cond_dim));
  pos_ = register_parameter("pos", torch::randn({1, c.num_condition_tokens, c.cond_dim}) * 0.02);
}

torch::Tensor ConditionEncoderImpl::forward(const torch::Tensor &mask) {
  check_shape(mask, {-1, 1, resolution_, resolution_}, "mask");
  const int64_t b = mask.size(0);
  auto patches = mask.reshape({b, grid_, patch_, grid_, patch_})
                     .permute({0, 1, 3, 2, 4})
                     .reshape({b, grid_ * grid_, patch_ * patch_});
  // Centre {0,1} masks on zero so empty patches do not all sit at a corner of
  // input space.
  auto x = torch::gelu(fc1_(patches * 2.0 - 1.0));
  x = torch::gelu(fc2_(x));
  x = torch::gelu(fc3_(x));
  x = fc4_(x) + pos_;
  return torch::layer_norm(x, {x.size(-1)});
}

torch::Tensor ConditionEncoderImpl::pool(const torch::Tensor &tokens, int64_t num_tokens) const {
  const int64_t b = tokens.size(0), d = tokens.size(2);
  auto side = static_cast<int64_t>(std::llround(std::sqrt(double(num_tokens))));
  auto grid = tokens.transpose(1, 2).reshape({b, d, grid_, grid_});
  return torch::adaptive_avg_pool2d(grid, {side, side})
      .reshape({b, d, side * side})
      .transpose(1, 2);
}

KeywordEncoderImpl::KeywordEncoderImpl(const ModelConfig &c) {
  embed_ = register_module("embed", torch::nn::Embedding(Tokenizer::kVocabSize, c.cond_dim));
  proj_ = register_module("proj", torch::nn::Linear(c.cond_dim, c.cond_dim));
}

torch::Tensor KeywordEncoderImpl::forward(const torch::Tensor &ids) {
  auto is_byte = (ids < 256).to(torch::kFloat32).unsqueeze(-1);  // [B, L, 1]
  auto count = is_byte.sum(1);                                   // [B, 1]
  auto mean = (embed_(ids) * is_byte).sum(1) / count.clamp_min(1.0);
  return proj_(mean) * (count > 0).to(torch::kFloat32);
}

}  // namespace segicl::models
