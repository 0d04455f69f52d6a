// Building blocks shared by the SegICL modules: a LoRA-capable linear layer,
// multi-head attention written with matmul + softmax (LibTorch 1.13 has no
// batch_first MHA and no public SDPA, and the same code must build
// against 2.x), pre-LN transformer blocks, and small helpers. Not a general
// layer library: only what this folder needs. Modules are not thread-safe to
// train; concurrent forward passes under NoGradGuard are fine.
#pragma once

#include <torch/torch.h>

namespace segicl::models {

// y = W x + b + (alpha / r) * B (A x). A is Kaiming-uniform, B is zero, so
// enabling LoRA leaves the output unchanged; enable_lora() freezes W and b
// (§4.2: LoRA on the LLM).
class LoRALinearImpl : public torch::nn::Module {
 public:
  LoRALinearImpl(int64_t in_features, int64_t out_features);
  torch::Tensor forward(const torch::Tensor &x);
  // Adds adapters "lora_a" [r, in] and "lora_b" [out, r] and freezes the base
  // layer. Calling it again is an error (UsageError).
  void enable_lora(int64_t rank, double alpha);
  bool lora_enabled() const { return rank_ > 0; }
  torch::nn::Linear &base() { return base_; }

 private:
  torch::nn::Linear base_{nullptr};
  torch::Tensor lora_a_, lora_b_;
  int64_t rank_ = 0;
  double scale_ = 0;
};
TORCH_MODULE(LoRALinear);

// softmax(q k^T / sqrt(dh)) v over heads. q [B, H, Lq, dh], k/v [B, H, Lk, dh];
// `allowed` [B or 1, Lq, Lk] bool (true = may attend) or undefined. Every row
// must allow one key.
torch::Tensor scaled_attention(const torch::Tensor &q, const torch::Tensor &k,
                               const torch::Tensor &v, const torch::Tensor &allowed);

// Multi-head attention of x [B, Lq, dim] over context [B, Lk, context_dim] ->
// [B, Lq, dim].
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t context_dim, int64_t num_heads);
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &context,
                        const torch::Tensor &allowed = {});
  void enable_lora(int64_t rank, double alpha);

 private:
  LoRALinear q_{nullptr}, k_{nullptr}, v_{nullptr}, o_{nullptr};
  int64_t num_heads_;
};
TORCH_MODULE(Attention);

// Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x)) with a GELU MLP.
class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(int64_t dim, int64_t num_heads, int64_t mlp_dim);
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &allowed = {});
  void enable_lora(int64_t rank, double alpha);

 private:
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  Attention attn_{nullptr};
  LoRALinear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TransformerBlock);

// Sinusoidal embedding of integer timesteps t [B] -> [B, dim] (dim even), as in
// DDPM.
torch::Tensor timestep_embedding(const torch::Tensor &t, int64_t dim);

// GroupNorm group count for `channels`: the largest of 32, 16, 8, 4, 2, 1 that
// divides it.
int64_t norm_groups(int64_t channels);

// Checks `t` has `dims` dimensions and the given sizes (-1 = any); ShapeError
// naming `name`.
void check_shape(const torch::Tensor &t, const std::vector<int64_t> &sizes, const char *name);

// Rows of token ids as one [rows, longest] int64 tensor on `device`, right-padded with `pad`.
torch::Tensor padded_ids(const std::vector<std::vector<int64_t>> &rows, int64_t pad, const torch::Device &device);

}  // namespace segicl::models
