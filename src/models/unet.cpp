// UNet2d (see unet.h): the plain nnU-Net-style 2D U-Net of the supervised baseline.
#include "segicl/models/unet.h"

#include <string>

#include "segicl/core/error.h"

namespace segicl::models {
namespace {

namespace F = torch::nn::functional;

// conv3x3 -> InstanceNorm -> LeakyReLU, twice (nnU-Net's StackedConvBlocks of one stage).
torch::nn::Sequential conv_block(int64_t in, int64_t out) {
  torch::nn::Sequential block;
  for (int i = 0; i < 2; ++i) {
    block->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(i ? out : in, out, 3).padding(1)));
    block->push_back(torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(out).affine(true)));
    block->push_back(torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.01)));
  }
  return block;
}

}  // namespace

UNet2dImpl::UNet2dImpl(const UNetOptions& options) : options_(options) {
  if (options.levels < 1 || options.base_features < 1 || options.in_channels < 1 ||
      options.out_channels < 1)
    SEGICL_THROW(UsageError, "U-Net needs levels, base_features, in_channels and out_channels >= 1",
                 "", "e.g. levels 4, base_features 32");
  std::vector<int64_t> width;
  for (int64_t l = 0; l < options.levels; ++l) width.push_back(options.base_features << l);
  for (int64_t l = 0; l < options.levels; ++l)
    encoder_.push_back(register_module(
        "enc" + std::to_string(l), conv_block(l ? width[l - 1] : options.in_channels, width[l])));
  // Decoder level l (from the bottom up) upsamples width[l + 1] -> width[l] and fuses the skip.
  for (int64_t l = options.levels - 2; l >= 0; --l) {
    up_.push_back(register_module(
        "up" + std::to_string(l),
        torch::nn::ConvTranspose2d(
            torch::nn::ConvTranspose2dOptions(width[l + 1], width[l], 2).stride(2))));
    decoder_.push_back(
        register_module("dec" + std::to_string(l), conv_block(2 * width[l], width[l])));
  }
  head_ = register_module(
      "head", torch::nn::Conv2d(torch::nn::Conv2dOptions(width[0], options.out_channels, 1)));
}

torch::Tensor UNet2dImpl::forward(const torch::Tensor& images) {
  const int64_t factor = int64_t{1} << (options_.levels - 1);
  if (images.dim() != 4 || images.size(1) != options_.in_channels || images.size(2) % factor ||
      images.size(3) % factor)
    SEGICL_THROW(ShapeError,
                 "U-Net input must be [B, " + std::to_string(options_.in_channels) +
                     ", H, W] with H, W divisible by " + std::to_string(factor) + ", got " +
                     c10::str(images.sizes()),
                 "", "resize the planes");
  std::vector<torch::Tensor> skips;
  torch::Tensor x = images;
  for (size_t l = 0; l < encoder_.size(); ++l) {
    if (l) x = F::max_pool2d(x, F::MaxPool2dFuncOptions(2));
    x = encoder_[l]->forward(x);
    skips.push_back(x);
  }
  skips.pop_back();  // the bottleneck is x itself
  for (size_t d = 0; d < decoder_.size(); ++d) {
    x = up_[d]->forward(x);
    x = decoder_[d]->forward(torch::cat({x, skips.back()}, 1));
    skips.pop_back();
  }
  return head_->forward(x);
}

}  // namespace segicl::models
