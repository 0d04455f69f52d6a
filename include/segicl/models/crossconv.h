// CrossConvNet: the UniverSeg architecture (Butoi et al., ICCV 2023) in LibTorch, optionally
// conditioned on the instruction text. A query image and K support pairs (image + mask) pass
// through CrossBlocks: at every level each (query, support) pair is fused by a shared conv, the
// query keeps the mean over supports, each support keeps its own fused features. Four encoder
// levels (max-pool between) and three decoder levels (bilinear up + skip), then a 1x1 conv to
// mask logits. Everything is convolution, so it learns from few CPU steps where the paper's
// transformer + diffusion decoder did not (models/README.md), and it runs in milliseconds.
//
// Our additions, both off in the `universeg` baseline preset: FiLM of the query features by a
// bag-of-words embedding of the instruction, and, with text on, a learned "null" support pair so
// that K = 0 (text only, the paper's SegICL-0) is a valid input. Not a trainer or checkpoint
// format (segicl_train, checkpoint.h). Concurrent forward passes under NoGradGuard are fine.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "segicl/models/config.h"

namespace segicl::models {

// Word ids of an instruction for the bag-of-words text embedding: lower-cased alphanumeric
// words, hashed (FNV-1a) into `buckets` ids; 0 is reserved for padding. Deterministic across
// platforms and builds.
std::vector<int64_t> hash_words(const std::string& text, int64_t buckets);

// One UniverSeg CrossBlock. q [B, Fq, H, W], s [B, S, Fs, H, W], valid [B, S] (1 = real pair),
// film [B, 2F] or undefined -> q' [B, F, H, W], s' [B, S, F, H, W] (s' undefined when
// `with_support_output` is false: the last decoder block only needs the query).
class CrossBlockImpl : public torch::nn::Module {
 public:
  CrossBlockImpl(int64_t query_in, int64_t support_in, int64_t features, bool with_support_output);
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& q, const torch::Tensor& s,
                                                  const torch::Tensor& valid, const torch::Tensor& film);

 private:
  torch::nn::Conv2d cross_{nullptr}, query_{nullptr}, support_{nullptr};
};
TORCH_MODULE(CrossBlock);

class CrossConvNetImpl : public torch::nn::Module {
 public:
  explicit CrossConvNetImpl(const ModelConfig& config);
  // query [B, C, R, R]; support_images [B, K, C, R, R], support_masks [B, K, 1, R, R], valid [B, K]
  // bool (K may be 0 when text conditioning is on; undefined tensors mean K = 0); word_ids [B, L]
  // (0 = padding; undefined or L = 0 means no text). Returns mask logits [B, 1, R, R].
  // UsageError for K = 0 (or no valid pair) without text conditioning.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& support_images,
                        const torch::Tensor& support_masks, const torch::Tensor& valid,
                        const torch::Tensor& word_ids);
  // UsageError (with the fix as hint) when the model needs an example and `has_example` is false.
  void require_example(bool has_example) const;
  // Word ids [B, L] of B instructions on `device` (see hash_words).
  torch::Tensor word_ids(const std::vector<std::string>& instructions, const torch::Device& device) const;

 private:
  ModelConfig config_;
  std::vector<CrossBlock> encoder_, decoder_;
  torch::nn::Conv2d head_{nullptr};
  torch::nn::Embedding words_{nullptr};
  torch::nn::Sequential text_mlp_{nullptr};
  std::vector<torch::nn::Linear> film_;  // one per block (encoder then decoder), zero-initialised
  torch::Tensor null_support_;           // [C + 1, R, R]: the K = 0 pair (text on)
};
TORCH_MODULE(CrossConvNet);

}  // namespace segicl::models
