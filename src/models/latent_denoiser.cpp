// Latent UNet denoiser, noise schedule and DDIM sampler (see
// latent_denoiser.h).
#include "segicl/models/latent_denoiser.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "segicl/core/error.h"
#include "segicl/models/layers.h"

namespace segicl::models {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  int64_t pad = k == 4 ? 1 : k / 2;
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}
nn::GroupNorm group_norm(int64_t ch) {
  return nn::GroupNorm(nn::GroupNormOptions(norm_groups(ch), ch));
}

class ResBlockImpl : public nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t temb) {
    norm1_ = register_module("norm1", group_norm(in));
    conv1_ = register_module("conv1", conv(in, out, 3));
    temb_ = register_module("temb", nn::Linear(temb, out));
    norm2_ = register_module("norm2", group_norm(out));
    conv2_ = register_module("conv2", conv(out, out, 3));
    if (in != out) skip_ = register_module("skip", conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &temb) {
    auto h = conv1_(torch::silu(norm1_(x))) + temb_(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
    h = conv2_(torch::silu(norm2_(h)));
    return (skip_ ? skip_(x) : x) + h;
  }

 private:
  nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  nn::Linear temb_{nullptr};
};
TORCH_MODULE(ResBlock);

// Cross-attention of latent pixels to c_t (SD's spatial transformer, one
// attention layer), plus the optional grid injection: c_t comes from a g x g
// patch grid, so laying it out spatially gives the UNet a direct, local path
// from each mask patch to its latent pixels.
class CondBlockImpl : public nn::Module {
 public:
  CondBlockImpl(int64_t ch, int64_t cond_dim, int64_t heads, bool spatial) {
    norm_ = register_module("norm", group_norm(ch));
    attn_ = register_module("attn", Attention(ch, cond_dim, heads));
    if (spatial) spatial_ = register_module("spatial", conv(cond_dim, ch, 1));
  }
  torch::Tensor forward(const torch::Tensor &h, const torch::Tensor &cond,
                        const torch::Tensor &cond_grid) {
    const int64_t b = h.size(0), c = h.size(1), hh = h.size(2), ww = h.size(3);
    auto x = norm_(h).reshape({b, c, hh * ww}).transpose(1, 2);
    auto out = h + attn_(x, cond).transpose(1, 2).reshape({b, c, hh, ww});
    if (spatial_ && cond_grid.defined()) {
      torch::Tensor g =
          cond_grid.size(2) >= hh
              ? torch::adaptive_avg_pool2d(cond_grid, {hh, ww})
              : nn::functional::interpolate(cond_grid, nn::functional::InterpolateFuncOptions()
                                                           .size(std::vector<int64_t>{hh, ww})
                                                           .mode(torch::kNearest));
      out = out + spatial_(g);
    }
    return out;
  }

 private:
  nn::GroupNorm norm_{nullptr};
  Attention attn_{nullptr};
  nn::Conv2d spatial_{nullptr};
};
TORCH_MODULE(CondBlock);

std::vector<double> make_alpha_bar(const std::string &kind, int64_t steps) {
  std::vector<double> betas(static_cast<size_t>(steps));
  if (kind == "cosine") {
    auto f = [&](double t) {
      const double s = 0.008;
      double v = std::cos((t / double(steps) + s) / (1 + s) * M_PI / 2);
      return v * v;
    };
    for (int64_t t = 0; t < steps; ++t)
      betas[t] = std::min(1.0 - f(double(t + 1)) / f(double(t)), 0.999);
  } else if (kind == "scaled_linear") {
    const double lo = std::sqrt(8.5e-4), hi = std::sqrt(1.2e-2);
    for (int64_t t = 0; t < steps; ++t) {
      double v = lo + (hi - lo) * double(t) / double(steps - 1);
      betas[t] = v * v;
    }
  } else {
    SEGICL_THROW(ConfigError, "unknown noise_schedule '" + kind + "'", "",
                 "use \"cosine\" or \"scaled_linear\"");
  }
  std::vector<double> alpha_bar(betas.size());
  double prod = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) alpha_bar[i] = prod *= 1.0 - betas[i];
  return alpha_bar;
}

}  // namespace

NoiseSchedule::NoiseSchedule(const std::string &kind, int64_t steps)
    : alpha_bar_(make_alpha_bar(kind, steps)) {
  std::vector<float> values(alpha_bar_.begin(), alpha_bar_.end());
  table_ = torch::tensor(values, torch::kFloat32);
}

torch::Tensor NoiseSchedule::alpha_bar(const torch::Tensor &t) const {
  return table_.index_select(0, t.to(torch::kCPU, torch::kLong)).to(t.device());
}

LatentDenoiserImpl::LatentDenoiserImpl(const ModelConfig &c)
    : config_(c), schedule_(c.noise_schedule, c.diffusion_steps) {
  const int64_t base = c.unet_channels, temb = 4 * base, d = c.cond_dim, z = c.latent_channels;
  const auto levels = static_cast<int64_t>(c.unet_channel_mult.size());
  time_mlp_ = register_module(
      "time_mlp", nn::Sequential(nn::Linear(base, temb), nn::SiLU(), nn::Linear(temb, temb)));
  keyword_proj_ = register_module("keyword_proj", nn::Linear(d, temb));
  conv_in_ = register_module("conv_in", conv(z, base, 3));
  enc_res_ = register_module("enc_res", nn::ModuleList());
  enc_cond_ = register_module("enc_cond", nn::ModuleList());
  downs_ = register_module("downs", nn::ModuleList());
  std::vector<int64_t> widths;
  int64_t ch = base;
  auto cond_block = [&](int64_t width) {
    return CondBlock(width, d, c.unet_heads, c.cond_spatial_injection);
  };
  for (int64_t i = 0; i < levels; ++i) {
    int64_t out = base * c.unet_channel_mult[i];
    for (int64_t r = 0; r < c.unet_res_blocks; ++r) {
      enc_res_->push_back(ResBlock(ch, out, temb));
      enc_cond_->push_back(cond_block(out));
      ch = out;
    }
    widths.push_back(out);
    if (i + 1 < levels) downs_->push_back(conv(out, out, 3, 2));
  }
  mid_ = register_module(
      "mid", nn::ModuleList(ResBlock(ch, ch, temb), cond_block(ch), ResBlock(ch, ch, temb)));
  ups_ = register_module("ups", nn::ModuleList());
  dec_res_ = register_module("dec_res", nn::ModuleList());
  dec_cond_ = register_module("dec_cond", nn::ModuleList());
  for (int64_t i = levels - 1; i >= 0; --i) {
    int64_t out = widths[i];
    if (i + 1 < levels) ups_->push_back(conv(ch, ch, 3));
    dec_res_->push_back(ResBlock(ch + out, out, temb));
    dec_cond_->push_back(cond_block(out));
    for (int64_t r = 1; r < c.unet_res_blocks; ++r) {
      dec_res_->push_back(ResBlock(out, out, temb));
      dec_cond_->push_back(cond_block(out));
    }
    ch = out;
  }
  out_norm_ = register_module("out_norm", group_norm(ch));
  out_conv_ = register_module("out_conv", conv(ch, z, 3));
  // The hint branch is built last so every other parameter draws the same
  // initial values from the global generator whether or not the hint exists.
  if (c.use_image_hint) {
    const int64_t hc = c.hint_channels;
    hint_stem_ = register_module(
        "hint_stem",
        nn::Sequential(conv(c.in_channels, hc, 3), nn::SiLU(), conv(hc, hc, 4, 2), nn::SiLU(),
                       conv(hc, 2 * hc, 4, 2), nn::SiLU(), conv(2 * hc, 2 * hc, 4, 2), nn::SiLU()));
    hint_downs_ = register_module("hint_downs", nn::ModuleList());
    hint_zero_ = register_module("hint_zero", nn::ModuleList());
    for (int64_t i = 0; i < levels; ++i) {
      if (i > 0) hint_downs_->push_back(conv(2 * hc, 2 * hc, 3, 2));
      auto zero = conv(2 * hc, i == 0 ? base : widths[i - 1], 1);
      torch::NoGradGuard no_grad;
      zero->weight.zero_();
      zero->bias.zero_();
      hint_zero_->push_back(zero);
    }
  }
}

std::vector<torch::Tensor> LatentDenoiserImpl::encode_hint(const torch::Tensor &hint_image) {
  std::vector<torch::Tensor> features;
  if (!config_.use_image_hint || !hint_image.defined()) return features;
  check_shape(hint_image, {-1, config_.in_channels, config_.resolution, config_.resolution},
              "hint_image");
  auto f = hint_stem_->forward(hint_image);
  for (size_t i = 0; i < hint_zero_->size(); ++i) {
    if (i > 0) f = torch::silu(hint_downs_[i - 1]->as<nn::Conv2d>()->forward(f));
    features.push_back(hint_zero_[i]->as<nn::Conv2d>()->forward(f));
  }
  return features;
}

torch::Tensor LatentDenoiserImpl::forward(const torch::Tensor &x_t, const torch::Tensor &t,
                                          const torch::Tensor &cond, const torch::Tensor &keyword,
                                          const torch::Tensor &hint_image) {
  return forward_features(x_t, t, cond, keyword, encode_hint(hint_image));
}

torch::Tensor LatentDenoiserImpl::forward_features(const torch::Tensor &x_t, const torch::Tensor &t,
                                                   const torch::Tensor &cond,
                                                   const torch::Tensor &keyword,
                                                   const std::vector<torch::Tensor> &hint) {
  const int64_t s = config_.latent_resolution(), b = x_t.size(0);
  check_shape(x_t, {-1, config_.latent_channels, s, s}, "x_t");
  check_shape(t, {b}, "t");
  check_shape(cond, {b, -1, config_.cond_dim}, "cond");
  check_shape(keyword, {b, config_.cond_dim}, "keyword");
  auto temb =
      time_mlp_->forward(timestep_embedding(t, config_.unet_channels)) + keyword_proj_(keyword);
  torch::Tensor grid;
  const int64_t g = config_.token_grid();
  if (config_.cond_spatial_injection && cond.size(1) == g * g)
    grid = cond.transpose(1, 2).reshape({b, config_.cond_dim, g, g});
  const auto levels = static_cast<int64_t>(config_.unet_channel_mult.size());
  auto h = conv_in_(x_t);
  std::vector<torch::Tensor> skips;
  size_t block = 0;
  for (int64_t i = 0; i < levels; ++i) {
    if (!hint.empty()) h = h + hint[i];
    for (int64_t r = 0; r < config_.unet_res_blocks; ++r, ++block) {
      h = enc_res_[block]->as<ResBlock>()->forward(h, temb);
      h = enc_cond_[block]->as<CondBlock>()->forward(h, cond, grid);
    }
    skips.push_back(h);
    if (i + 1 < levels) h = downs_[i]->as<nn::Conv2d>()->forward(h);
  }
  h = mid_[0]->as<ResBlock>()->forward(h, temb);
  h = mid_[1]->as<CondBlock>()->forward(h, cond, grid);
  h = mid_[2]->as<ResBlock>()->forward(h, temb);
  block = 0;
  size_t up = 0;
  for (int64_t i = levels - 1; i >= 0; --i) {
    if (i + 1 < levels) {
      h = torch::repeat_interleave(torch::repeat_interleave(h, 2, 2), 2, 3);
      h = ups_[up++]->as<nn::Conv2d>()->forward(h);
    }
    h = torch::cat({h, skips[i]}, 1);
    for (int64_t r = 0; r < config_.unet_res_blocks; ++r, ++block) {
      h = dec_res_[block]->as<ResBlock>()->forward(h, temb);
      h = dec_cond_[block]->as<CondBlock>()->forward(h, cond, grid);
    }
  }
  return out_conv_(torch::silu(out_norm_(h)));
}

torch::Tensor LatentDenoiserImpl::target(const torch::Tensor &z0, const torch::Tensor &t,
                                         const torch::Tensor &noise) const {
  if (config_.prediction != "v") return noise;
  auto ab = schedule_.alpha_bar(t).view({-1, 1, 1, 1});
  return ab.sqrt() * noise - (1 - ab).sqrt() * z0;
}

torch::Tensor LatentDenoiserImpl::q_sample(const torch::Tensor &z0, const torch::Tensor &t,
                                           const torch::Tensor &noise) const {
  auto ab = schedule_.alpha_bar(t).view({-1, 1, 1, 1});
  return ab.sqrt() * z0 + (1 - ab).sqrt() * noise;
}

torch::Tensor LatentDenoiserImpl::ddim_sample(const torch::Tensor &cond,
                                              const torch::Tensor &keyword,
                                              const torch::Tensor &hint_image, int64_t steps,
                                              uint64_t seed, double eta) {
  if (steps < 1 || steps > schedule_.steps()) {
    SEGICL_THROW(UsageError, "ddim steps must be in [1, " + std::to_string(schedule_.steps()) + "]",
                 "", "use e.g. 4-50 steps");
  }
  torch::NoGradGuard no_grad;
  const int64_t b = cond.size(0), s = config_.latent_resolution();
  const auto device = cond.device();
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto cpu = torch::TensorOptions().dtype(torch::kFloat32);
  auto x = torch::randn({b, config_.latent_channels, s, s}, generator, cpu).to(device);
  auto hint = encode_hint(hint_image);
  // Evenly spaced timesteps ending at the last (noisiest) one.
  std::vector<int64_t> ts;
  for (int64_t j = 0; j < steps; ++j) ts.push_back((j + 1) * schedule_.steps() / steps - 1);
  for (int64_t j = steps - 1; j >= 0; --j) {
    const double a = schedule_.alpha_bar(ts[j]);
    const double a_prev = j > 0 ? schedule_.alpha_bar(ts[j - 1]) : 1.0;
    auto t = torch::full({b}, ts[j], torch::TensorOptions().dtype(torch::kLong).device(device));
    auto out = forward_features(x, t, cond, keyword, hint);
    auto x0 = config_.prediction == "v" ? std::sqrt(a) * x - std::sqrt(1 - a) * out
                                        : (x - std::sqrt(1 - a) * out) / std::sqrt(a);
    x0 = x0.clamp(-1.0, 1.0);
    auto eps = (x - std::sqrt(a) * x0) / std::sqrt(1 - a);
    const double sigma = eta * std::sqrt((1 - a_prev) / (1 - a)) * std::sqrt(1 - a / a_prev);
    x = std::sqrt(a_prev) * x0 + std::sqrt(std::max(1 - a_prev - sigma * sigma, 0.0)) * eps;
    if (sigma > 0) x = x + sigma * torch::randn(x.sizes(), generator, cpu).to(device);
  }
  return x;
}

}  // namespace segicl::models
