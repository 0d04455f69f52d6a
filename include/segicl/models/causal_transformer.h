// The multi-modal encoder's language model (paper §3.2/3.3, Qwen-7B there): a
// pre-LN causal transformer over the interleaved sequence
//   [BOS + instruction bytes][ctx image 1][ctx mask 1] ... [ctx image k][ctx
//   mask k][query image]
// with learned segment-type and position embeddings, and the LLaVA-style
// projector of Eq. 2. Not a language model: no LM head and no text generation;
// only the query outputs are used.
#pragma once

#include <torch/torch.h>

#include "segicl/models/config.h"
#include "segicl/models/layers.h"

namespace segicl::models {

// Segment-type ids of the sequence (learned embeddings, checkpoint rows in this
// order).
enum class Segment : int64_t { kText = 0, kContextImage = 1, kContextMask = 2, kQuery = 3 };

class CausalTransformerImpl : public torch::nn::Module {
 public:
  explicit CausalTransformerImpl(const ModelConfig &config);

  // ids [B, L] tokenizer ids -> [B, L, d_model] (no segment or position yet).
  torch::Tensor embed_text(const torch::Tensor &ids);
  // Context-mask condition tokens [N, n, cond_dim] -> [N, n, d_model].
  torch::Tensor embed_masks(const torch::Tensor &mask_tokens);
  // x [B, L, d_model] + segment embeddings ([L] int64 ids) + positions
  // offset..offset+L-1. UsageError when the positions exceed max_seq_len (too
  // many context pairs).
  torch::Tensor add_embeddings(const torch::Tensor &x, const torch::Tensor &segments,
                               int64_t position_offset);

  // x [B, L, d_model], valid [B, L] bool (false: PAD text or padded context
  // pair, never attended), query_start: first index of the query segment.
  // Attention is causal; with query_bidirectional the query segment also
  // attends within itself. Returns the final-LN hidden states [B, L, d_model].
  // REQUIRES valid[:, 0] (the BOS token) to be true.
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &valid, int64_t query_start);

  // The attention pattern forward() uses: [B, L, L] bool, true = row may attend
  // column.
  torch::Tensor attention_mask(const torch::Tensor &valid, int64_t query_start) const;

  // LoRA on q, k, v, o and both MLP layers of every block (§4.2); freezes their
  // base weights.
  void enable_lora(int64_t rank, double alpha);

 private:
  ModelConfig config_;
  torch::nn::Embedding text_embed_{nullptr}, segment_embed_{nullptr}, pos_embed_{nullptr};
  torch::nn::Linear mask_proj_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};
TORCH_MODULE(CausalTransformer);

// LLaVA-style 2-layer MLP d_model -> d_model -> cond_dim (Eq. 2).
class ProjectorImpl : public torch::nn::Module {
 public:
  explicit ProjectorImpl(const ModelConfig &config);
  torch::Tensor forward(const torch::Tensor &hidden);

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(Projector);

}  // namespace segicl::models
