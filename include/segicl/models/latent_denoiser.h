// The diffusion decoder of paper §3.4 (Eq. 6): a small UNet on mask-autoencoder
// latents that predicts the noise epsilon, conditioned on condition tokens c_t
// (cross-attention at every level), a keyword vector c_k (added to the time
// embedding) and - beyond the paper - a ControlNet-style hint from the query
// image injected through zero-initialised 1x1 convs, so at initialisation the
// model equals the one without a hint. Plus the noise schedule and DDIM. Not
// Stable Diffusion: no pretrained weights, no text transformer, no
// classifier-free guidance.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "segicl/models/config.h"

namespace segicl::models {

// Cumulative signal fractions alpha_bar[t], t = 0..steps-1 (t = 0 is the least
// noisy). "cosine": Nichol & Dhariwal 2021 with s = 0.008 and betas clipped at
// 0.999 - it keeps more signal at mid t than the linear schedule, which matters
// for our 4x4..16x16 latents. "scaled_linear": Stable Diffusion's betas =
// linspace(sqrt(8.5e-4), sqrt(1.2e-2))^2. Immutable; safe for concurrent use.
class NoiseSchedule {
 public:
  NoiseSchedule(const std::string &kind, int64_t steps);
  int64_t steps() const { return static_cast<int64_t>(alpha_bar_.size()); }
  double alpha_bar(int64_t t) const { return alpha_bar_.at(static_cast<size_t>(t)); }
  // alpha_bar at t [B] (int64, any device) -> [B] float32 on t's device.
  torch::Tensor alpha_bar(const torch::Tensor &t) const;

 private:
  std::vector<double> alpha_bar_;
  torch::Tensor table_;  // float32 CPU copy of alpha_bar_
};

class LatentDenoiserImpl : public torch::nn::Module {
 public:
  explicit LatentDenoiserImpl(const ModelConfig &config);

  // Predicted noise (or v, see ModelConfig::prediction) [B, z, s, s] (s = R/8)
  // for x_t [B, z, s, s] at timesteps t [B] (int64), condition tokens cond [B,
  // T', cond_dim] (any T'; the spatial injection needs T' = T), keyword [B,
  // cond_dim] and hint_image [B, C, R, R] (ignored when undefined or the config
  // has use_image_hint off). ShapeError on bad shapes.
  torch::Tensor forward(const torch::Tensor &x_t, const torch::Tensor &t, const torch::Tensor &cond,
                        const torch::Tensor &keyword, const torch::Tensor &hint_image = {});

  // Hint features per UNet level (empty when there is no hint): compute once
  // per image and reuse over the DDIM steps.
  std::vector<torch::Tensor> encode_hint(const torch::Tensor &hint_image);
  torch::Tensor forward_features(const torch::Tensor &x_t, const torch::Tensor &t,
                                 const torch::Tensor &cond, const torch::Tensor &keyword,
                                 const std::vector<torch::Tensor> &hint_features);

  // x_t = sqrt(ab) z0 + sqrt(1 - ab) noise.
  torch::Tensor q_sample(const torch::Tensor &z0, const torch::Tensor &t,
                         const torch::Tensor &noise) const;

  // The regression target of the UNet output: noise ("epsilon") or v (config
  // prediction).
  torch::Tensor target(const torch::Tensor &z0, const torch::Tensor &t,
                       const torch::Tensor &noise) const;

  // Deterministic DDIM (eta = 0) or DDIM with noise (eta > 0) in `steps` evenly
  // spaced steps; returns latents [B, z, s, s]. All random numbers come from a
  // CPU generator seeded with `seed` and are then moved to cond's device, so
  // CPU and CUDA runs start from identical noise. The x0 estimate is clipped to
  // the autoencoder's (-1, 1) latent box. Runs under NoGradGuard. REQUIRES 1 <=
  // steps <= diffusion_steps.
  torch::Tensor ddim_sample(const torch::Tensor &cond, const torch::Tensor &keyword,
                            const torch::Tensor &hint_image, int64_t steps, uint64_t seed,
                            double eta = 0.0);

  const NoiseSchedule &schedule() const { return schedule_; }

 private:
  ModelConfig config_;
  NoiseSchedule schedule_;
  torch::nn::Sequential time_mlp_{nullptr};
  torch::nn::Linear keyword_proj_{nullptr};
  torch::nn::Conv2d conv_in_{nullptr}, out_conv_{nullptr};
  torch::nn::GroupNorm out_norm_{nullptr};
  torch::nn::ModuleList enc_res_{nullptr}, enc_cond_{nullptr}, downs_{nullptr};
  torch::nn::ModuleList mid_{nullptr}, ups_{nullptr}, dec_res_{nullptr}, dec_cond_{nullptr};
  torch::nn::Sequential hint_stem_{nullptr};
  torch::nn::ModuleList hint_downs_{nullptr}, hint_zero_{nullptr};
};
TORCH_MODULE(LatentDenoiser);

}  // namespace segicl::models
