// Shared building blocks (see layers.h).
#include "segicl/models/layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "segicl/core/error.h"

namespace segicl::models {

LoRALinearImpl::LoRALinearImpl(int64_t in_features, int64_t out_features) {
  base_ = register_module("base", torch::nn::Linear(in_features, out_features));
}

torch::Tensor LoRALinearImpl::forward(const torch::Tensor &x) {
  torch::Tensor y = base_(x);
  if (rank_ > 0) y = y + scale_ * torch::matmul(torch::matmul(x, lora_a_.t()), lora_b_.t());
  return y;
}

void LoRALinearImpl::enable_lora(int64_t rank, double alpha) {
  if (rank_ > 0) SEGICL_THROW(UsageError, "LoRA is already enabled on this layer", "", "");
  if (rank <= 0) SEGICL_THROW(UsageError, "LoRA rank must be positive", "", "");
  const auto &w = base_->weight;
  auto a = torch::empty({rank, w.size(1)}, w.options());
  // Kaiming-uniform A (as the base Linear's own init) and zero B: the adapter
  // starts as a no-op.
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_a_ = register_parameter("lora_a", a);
  lora_b_ = register_parameter("lora_b", torch::zeros({w.size(0), rank}, w.options()));
  rank_ = rank;
  scale_ = alpha / static_cast<double>(rank);
  for (auto &p : base_->parameters()) p.set_requires_grad(false);
}

torch::Tensor scaled_attention(const torch::Tensor &q, const torch::Tensor &k,
                               const torch::Tensor &v, const torch::Tensor &allowed) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(-1))));
  if (allowed.defined()) {
    scores = scores.masked_fill(allowed.logical_not().unsqueeze(1),
                                -std::numeric_limits<float>::infinity());
  }
  return torch::matmul(torch::softmax(scores, -1), v);
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t context_dim, int64_t num_heads)
    : num_heads_(num_heads) {
  q_ = register_module("q", LoRALinear(dim, dim));
  k_ = register_module("k", LoRALinear(context_dim, dim));
  v_ = register_module("v", LoRALinear(context_dim, dim));
  o_ = register_module("o", LoRALinear(dim, dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &context,
                                     const torch::Tensor &allowed) {
  const int64_t b = x.size(0), lq = x.size(1), lk = context.size(1);
  auto split = [&](const torch::Tensor &t, int64_t len) {
    return t.view({b, len, num_heads_, -1}).transpose(1, 2);
  };
  auto out =
      scaled_attention(split(q_(x), lq), split(k_(context), lk), split(v_(context), lk), allowed);
  return o_(out.transpose(1, 2).reshape({b, lq, -1}));
}

void AttentionImpl::enable_lora(int64_t rank, double alpha) {
  for (auto *layer : {&q_, &k_, &v_, &o_}) (*layer)->enable_lora(rank, alpha);
}

TransformerBlockImpl::TransformerBlockImpl(int64_t dim, int64_t num_heads, int64_t mlp_dim) {
  norm1_ = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  attn_ = register_module("attn", Attention(dim, dim, num_heads));
  norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc1_ = register_module("fc1", LoRALinear(dim, mlp_dim));
  fc2_ = register_module("fc2", LoRALinear(mlp_dim, dim));
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor &x, const torch::Tensor &allowed) {
  auto h = norm1_(x);
  auto y = x + attn_(h, h, allowed);
  return y + fc2_(torch::gelu(fc1_(norm2_(y))));
}

void TransformerBlockImpl::enable_lora(int64_t rank, double alpha) {
  attn_->enable_lora(rank, alpha);
  fc1_->enable_lora(rank, alpha);
  fc2_->enable_lora(rank, alpha);
}

torch::Tensor timestep_embedding(const torch::Tensor &t, int64_t dim) {
  const int64_t half = dim / 2;
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  auto freqs = torch::exp(torch::arange(half, opts) * (-std::log(10000.0) / double(half)));
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  return torch::cat({torch::sin(args), torch::cos(args)}, 1);
}

int64_t norm_groups(int64_t channels) {
  for (int64_t g : {32, 16, 8, 4, 2})
    if (channels % g == 0) return g;
  return 1;
}

void check_shape(const torch::Tensor &t, const std::vector<int64_t> &sizes, const char *name) {
  bool ok = t.defined() && t.dim() == static_cast<int64_t>(sizes.size());
  for (size_t i = 0; ok && i < sizes.size(); ++i)
    ok = sizes[i] < 0 || t.size(static_cast<int64_t>(i)) == sizes[i];
  if (ok) return;
  std::ostringstream expected, actual;
  expected << "[";
  for (size_t i = 0; i < sizes.size(); ++i)
    expected << (i ? ", " : "") << (sizes[i] < 0 ? std::string("*") : std::to_string(sizes[i]));
  expected << "]";
  if (t.defined())
    actual << t.sizes();
  else
    actual << "undefined";
  SEGICL_THROW(ShapeError,
               std::string("argument '") + name + "': expected shape " + expected.str() + ", got " +
                   actual.str(),
               "", "check the tensor layout documented in the header");
}

torch::Tensor padded_ids(const std::vector<std::vector<int64_t>> &rows, int64_t pad,
                         const torch::Device &device) {
  size_t len = 0;
  for (const auto &row : rows) len = std::max(len, row.size());
  auto ids = torch::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(len)}, pad,
                         torch::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) acc[i][j] = rows[i][j];
  return ids.to(device);
}

}  // namespace segicl::models
