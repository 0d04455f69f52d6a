// UNet2d: a plain 2D U-Net (Ronneberger et al., 2015) in the nnU-Net flavour (Isensee et al.,
// 2021): per level two 3x3 convs, each followed by InstanceNorm (affine) and LeakyReLU(0.01);
// max-pool down, transposed-conv up, skip concatenation, a 1x1 head with one logit channel per
// task (independent sigmoids, so overlapping structures are fine). The supervised upper-bound
// baseline of the evaluation (eval/supervised_baseline.h). Not a few-shot model and not a
// checkpoint format: it is trained and used inside one evaluation run. InstanceNorm (not
// BatchNorm) so train and eval mode compute the same function at any batch size. Concurrent
// forward passes under NoGradGuard are fine.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace segicl::models {

struct UNetOptions {
  int64_t in_channels = 1;     // image channels C
  int64_t out_channels = 1;    // one logit per task T
  int64_t base_features = 32;  // features of the first level; doubled per level
  int64_t levels = 4;  // resolution levels (levels - 1 poolings); R must divide 2^(levels-1)
};

class UNet2dImpl : public torch::nn::Module {
 public:
  // REQUIRES levels >= 1, base_features >= 1, in/out_channels >= 1 (UsageError otherwise).
  explicit UNet2dImpl(const UNetOptions& options);
  // images [B, C, H, W] float -> logits [B, T, H, W]. ShapeError for a wrong channel count or H, W
  // not divisible by 2^(levels-1).
  torch::Tensor forward(const torch::Tensor& images);
  const UNetOptions& options() const { return options_; }

 private:
  UNetOptions options_;
  std::vector<torch::nn::Sequential> encoder_, decoder_;
  std::vector<torch::nn::ConvTranspose2d> up_;
  torch::nn::Conv2d head_{nullptr};
};
TORCH_MODULE(UNet2d);

}  // namespace segicl::models
