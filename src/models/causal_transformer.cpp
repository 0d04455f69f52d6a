// Causal transformer and projector (see causal_transformer.h).
#include "segicl/models/causal_transformer.h"

#include "segicl/core/error.h"
#include "segicl/models/tokenizer.h"

namespace segicl::models {

CausalTransformerImpl::CausalTransformerImpl(const ModelConfig &c) : config_(c) {
  const int64_t dm = c.d_model;
  text_embed_ = register_module("text_embed", torch::nn::Embedding(Tokenizer::kVocabSize, dm));
  mask_proj_ = register_module("mask_proj", torch::nn::Linear(c.cond_dim, dm));
  segment_embed_ = register_module("segment_embed", torch::nn::Embedding(4, dm));
  pos_embed_ = register_module("pos_embed", torch::nn::Embedding(c.max_seq_len, dm));
  // Small embeddings (GPT-2's 0.02) so the sum of the four embeddings starts
  // near unit scale.
  {
    torch::NoGradGuard no_grad;
    for (auto *e : {&text_embed_, &segment_embed_, &pos_embed_}) (*e)->weight.normal_(0, 0.02);
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i)
    blocks_->push_back(TransformerBlock(dm, c.num_heads, c.mlp_dim));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dm})));
}

torch::Tensor CausalTransformerImpl::embed_text(const torch::Tensor &ids) {
  return text_embed_(ids);
}

torch::Tensor CausalTransformerImpl::embed_masks(const torch::Tensor &mask_tokens) {
  return mask_proj_(mask_tokens);
}

torch::Tensor CausalTransformerImpl::add_embeddings(const torch::Tensor &x,
                                                    const torch::Tensor &segments,
                                                    int64_t position_offset) {
  const int64_t len = x.size(1);
  if (position_offset + len > config_.max_seq_len) {
    SEGICL_THROW(UsageError,
                 "sequence of " + std::to_string(position_offset + len) +
                     " tokens exceeds max_seq_len " + std::to_string(config_.max_seq_len),
                 "",
                 "use at most " + std::to_string(config_.max_context()) +
                     " context pairs or a shorter instruction");
  }
  auto positions = torch::arange(position_offset, position_offset + len,
                                 torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  return x + segment_embed_(segments.to(x.device())).unsqueeze(0) +
         pos_embed_(positions).unsqueeze(0);
}

torch::Tensor CausalTransformerImpl::attention_mask(const torch::Tensor &valid,
                                                    int64_t query_start) const {
  const int64_t len = valid.size(1);
  auto idx = torch::arange(len, torch::TensorOptions().dtype(torch::kLong).device(valid.device()));
  auto allowed = idx.unsqueeze(0) <= idx.unsqueeze(1);  // [L, L]: column j <= row i
  if (config_.query_bidirectional) {
    auto in_query = idx >= query_start;
    allowed = allowed.logical_or(in_query.unsqueeze(1).logical_and(in_query.unsqueeze(0)));
  }
  auto out = allowed.unsqueeze(0).logical_and(valid.to(torch::kBool).unsqueeze(1));
  // Each token may always see itself, so rows of invalid tokens never become
  // all -inf (NaN); no valid token attends an invalid one, so their values
  // never reach the outputs.
  return out.logical_or(
      torch::eye(len, torch::TensorOptions().dtype(torch::kBool).device(valid.device()))
          .unsqueeze(0));
}

torch::Tensor CausalTransformerImpl::forward(const torch::Tensor &x, const torch::Tensor &valid,
                                             int64_t query_start) {
  check_shape(x, {-1, -1, config_.d_model}, "x");
  check_shape(valid, {x.size(0), x.size(1)}, "valid");
  auto allowed = attention_mask(valid, query_start);
  auto h = x;
  for (const auto &block : *blocks_) h = block->as<TransformerBlock>()->forward(h, allowed);
  return norm_(h);
}

void CausalTransformerImpl::enable_lora(int64_t rank, double alpha) {
  for (const auto &block : *blocks_) block->as<TransformerBlock>()->enable_lora(rank, alpha);
}

ProjectorImpl::ProjectorImpl(const ModelConfig &c) {
  fc1_ = register_module("fc1", torch::nn::Linear(c.d_model, c.d_model));
  fc2_ = register_module("fc2", torch::nn::Linear(c.d_model, c.cond_dim));
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor &hidden) {
  return fc2_(torch::gelu(fc1_(hidden)));
}

}  // namespace segicl::models
