// The mask autoencoder whose latent space the diffusion decoder works in (the
// VAE of Stable Diffusion, paper §3.4, at our scale). A deterministic conv AE,
// not a VAE: the latent is bounded by tanh to (-1, 1), which keeps it at
// unit-ish scale for the noise schedule (binary masks push it towards +-1) and
// lets DDIM clip its x0 estimate to the same box.
#pragma once

#include <torch/torch.h>

#include "segicl/models/config.h"

namespace segicl::models {

class MaskAutoencoderImpl : public torch::nn::Module {
 public:
  explicit MaskAutoencoderImpl(const ModelConfig &config);
  // mask [B, 1, R, R] in [0, 1] -> latent [B, z, R/8, R/8] in (-1, 1).
  torch::Tensor encode(const torch::Tensor &mask);
  // latent [B, z, R/8, R/8] -> mask logits [B, 1, R, R] (apply sigmoid for
  // probabilities).
  torch::Tensor decode(const torch::Tensor &latent);

 private:
  int64_t resolution_, latent_channels_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};
TORCH_MODULE(MaskAutoencoder);

}  // namespace segicl::models
