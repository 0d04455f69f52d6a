// ModelConfig JSON, preset lookup and the analytic parameter / FLOP counts. The
// counts mirror the module constructors in this folder one for one; models_test
// checks them against real modules.
#include "segicl/models/config.h"

#include <algorithm>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "segicl/core/error.h"
#include "segicl/models/tokenizer.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace segicl::models {
namespace {

int64_t isqrt_exact(int64_t v) {
  auto r = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(v))));
  return r * r == v ? r : -1;
}

// Parameter counts of the building blocks (weights + biases).
int64_t linear(int64_t in, int64_t out) { return in * out + out; }
int64_t conv(int64_t in, int64_t out, int64_t k) { return in * out * k * k + out; }
int64_t norm(int64_t c) { return 2 * c; }
int64_t attention(int64_t dim, int64_t context_dim) {
  return 2 * linear(dim, dim) + 2 * linear(context_dim, dim);
}
int64_t transformer_block(int64_t dim, int64_t mlp) {
  return 2 * norm(dim) + attention(dim, dim) + linear(dim, mlp) + linear(mlp, dim);
}

int64_t resblock(int64_t in, int64_t out, int64_t temb) {
  return norm(in) + conv(in, out, 3) + linear(temb, out) + norm(out) + conv(out, out, 3) +
         (in != out ? conv(in, out, 1) : 0);
}

}  // namespace

int64_t ModelConfig::token_grid() const { return isqrt_exact(num_condition_tokens); }
int64_t ModelConfig::patch_size() const { return resolution / token_grid(); }
int64_t ModelConfig::example_grid() const { return isqrt_exact(tokens_per_example); }
int64_t ModelConfig::max_context() const {
  if (is_crossconv()) return crossconv_max_context;
  return (max_seq_len - max_text_tokens - num_condition_tokens) / (2 * tokens_per_example);
}

void ModelConfig::validate(const std::string &origin) const {
  auto fail = [&](const std::string &what) {
    SEGICL_THROW(ConfigError, "invalid model config: " + what, origin,
                 "fix the value in the preset or --set override");
  };
  // A checkpoint's config is untrusted input: every integer is bounded before the checks below
  // divide by it, shift by it or multiply it (fuzz_checkpoint: vision_heads = 0 divided by zero).
  constexpr int64_t kLargest = int64_t{1} << 24;
  const std::pair<const char *, int64_t> sizes[] = {
      {"resolution", resolution},       {"in_channels", in_channels},
      {"num_condition_tokens", num_condition_tokens}, {"cond_dim", cond_dim},
      {"cond_hidden", cond_hidden},     {"tokens_per_example", tokens_per_example},
      {"latent_channels", latent_channels}, {"ae_channels", ae_channels},
      {"unet_channels", unet_channels}, {"unet_res_blocks", unet_res_blocks},
      {"unet_heads", unet_heads},       {"hint_channels", hint_channels},
      {"diffusion_steps", diffusion_steps}, {"vision_width", vision_width},
      {"vision_layers", vision_layers}, {"vision_heads", vision_heads},
      {"vision_mlp_dim", vision_mlp_dim}, {"d_model", d_model},
      {"num_layers", num_layers},       {"num_heads", num_heads},
      {"mlp_dim", mlp_dim},             {"max_text_tokens", max_text_tokens},
      {"max_seq_len", max_seq_len},     {"lora_rank", lora_rank},
      {"crossconv_patch", crossconv_patch}, {"text_buckets", text_buckets},
      {"text_dim", text_dim},           {"crossconv_max_context", crossconv_max_context}};
  for (const auto &[name, value] : sizes)
    if (value < 0 || value > kLargest) fail(std::string(name) + " must be from 0 to 2^24");
  if (unet_heads <= 0 || vision_heads <= 0 || num_heads <= 0) fail("head counts must be positive");
  if (unet_channel_mult.size() > 16 || crossconv_encoder.size() > 16 || crossconv_decoder.size() > 16)
    fail("at most 16 levels in unet_channel_mult, crossconv_encoder and crossconv_decoder");
  for (int64_t m : unet_channel_mult)
    if (m <= 0 || m > 1024) fail("unet_channel_mult entries must be from 1 to 1024");
  for (const auto *widths : {&crossconv_encoder, &crossconv_decoder})
    for (int64_t w : *widths)
      if (w <= 0 || w > kLargest) fail("crossconv widths must be from 1 to 2^24");
  if (resolution <= 0 || resolution % 8 != 0) fail("resolution must be a positive multiple of 8");
  if (in_channels <= 0) fail("in_channels must be positive");
  int64_t g = token_grid();
  if (g <= 0) fail("num_condition_tokens must be a perfect square");
  if (resolution % g != 0) fail("resolution must be divisible by sqrt(num_condition_tokens)");
  if (example_grid() <= 0 || tokens_per_example > num_condition_tokens)
    fail("tokens_per_example must be a perfect square <= num_condition_tokens");
  if (cond_dim <= 0 || cond_hidden <= 0 || ae_channels <= 0 || latent_channels <= 0)
    fail("widths must be positive");
  if (unet_channel_mult.empty()) fail("unet_channel_mult must not be empty");
  int64_t levels = static_cast<int64_t>(unet_channel_mult.size());
  if (latent_resolution() % (int64_t{1} << (levels - 1)) != 0)
    fail("resolution/8 must be divisible by 2^(levels-1) of unet_channel_mult");
  if (unet_channels % 2 != 0) fail("unet_channels must be even (sinusoidal embedding)");
  for (int64_t m : unet_channel_mult)
    if ((unet_channels * m) % unet_heads != 0) fail("unet_heads must divide every UNet level width");
  if (unet_res_blocks <= 0) fail("unet_res_blocks must be positive");
  if (vision_width % vision_heads != 0) fail("vision_heads must divide vision_width");
  if (d_model % num_heads != 0) fail("num_heads must divide d_model");
  if (max_text_tokens < 2) fail("max_text_tokens must hold at least BOS and EOS");
  if (max_seq_len < max_text_tokens + num_condition_tokens)
    fail("max_seq_len must hold max_text_tokens + num_condition_tokens");
  if (diffusion_steps < 2) fail("diffusion_steps must be >= 2");
  if (noise_schedule != "cosine" && noise_schedule != "scaled_linear")
    fail("noise_schedule must be \"cosine\" or \"scaled_linear\"");
  if (prediction != "epsilon" && prediction != "v") fail("prediction must be \"epsilon\" or \"v\"");
  if (lora_rank < 0) fail("lora_rank must be >= 0");
  if (architecture != "segicl" && architecture != "crossconv")
    fail("architecture must be \"segicl\" or \"crossconv\"");
  if (crossconv_encoder.size() < 2 || crossconv_decoder.size() + 1 != crossconv_encoder.size())
    fail("crossconv_decoder must have one level fewer than crossconv_encoder (>= 2 levels)");
  if (crossconv_patch < 1) fail("crossconv_patch must be >= 1");
  if (is_crossconv() &&
      (resolution % crossconv_patch != 0 ||
       (resolution / crossconv_patch) % (int64_t{1} << (crossconv_encoder.size() - 1)) != 0))
    fail("resolution / crossconv_patch must be divisible by 2^(levels-1) of crossconv_encoder");
  if (text_buckets < 2 || text_dim <= 0) fail("text_buckets must be >= 2 and text_dim positive");
  if (crossconv_max_context < 1) fail("crossconv_max_context must be >= 1");
}

config::Json ModelConfig::to_json() const {
  return config::Json{{"architecture", architecture},
                      {"resolution", resolution},
                      {"in_channels", in_channels},
                      {"num_condition_tokens", num_condition_tokens},
                      {"cond_dim", cond_dim},
                      {"cond_hidden", cond_hidden},
                      {"tokens_per_example", tokens_per_example},
                      {"latent_channels", latent_channels},
                      {"ae_channels", ae_channels},
                      {"unet_channels", unet_channels},
                      {"unet_channel_mult", unet_channel_mult},
                      {"unet_res_blocks", unet_res_blocks},
                      {"unet_heads", unet_heads},
                      {"cond_spatial_injection", cond_spatial_injection},
                      {"use_image_hint", use_image_hint},
                      {"hint_channels", hint_channels},
                      {"diffusion_steps", diffusion_steps},
                      {"noise_schedule", noise_schedule},
                      {"prediction", prediction},
                      {"vision_width", vision_width},
                      {"vision_layers", vision_layers},
                      {"vision_heads", vision_heads},
                      {"vision_mlp_dim", vision_mlp_dim},
                      {"d_model", d_model},
                      {"num_layers", num_layers},
                      {"num_heads", num_heads},
                      {"mlp_dim", mlp_dim},
                      {"max_text_tokens", max_text_tokens},
                      {"max_seq_len", max_seq_len},
                      {"query_bidirectional", query_bidirectional},
                      {"lora_rank", lora_rank},
                      {"lora_alpha", lora_alpha},
                      {"ae_loss_weight", ae_loss_weight},
                      {"diffusion_loss_weight", diffusion_loss_weight},
                      {"stage2_decoder_loss_weight", stage2_decoder_loss_weight},
                      {"crossconv_encoder", crossconv_encoder},
                      {"crossconv_decoder", crossconv_decoder},
                      {"crossconv_text", crossconv_text},
                      {"crossconv_patch", crossconv_patch},
                      {"text_buckets", text_buckets},
                      {"text_dim", text_dim},
                      {"crossconv_max_context", crossconv_max_context}};
}

ModelConfig ModelConfig::from_json(const config::Json &j, const std::string &origin) {
  const config::Json defaults = ModelConfig{}.to_json();
  config::Json merged = defaults;
  config::merge_strict(merged, j, origin);
  // Integer keys take integers only: nlohmann's get<int64_t>() casts a float such as 1e300 with
  // undefined behaviour (a checkpoint's config is untrusted input; see fuzz/fuzz_checkpoint.cpp).
  auto integral = [](const config::Json &v) { return v.is_number_integer(); };
  for (const auto &[key, value] : merged.items()) {
    const config::Json &d = defaults.at(key);
    const bool ok = d.is_number_integer()  ? integral(value)
                    : d.is_array()         ? value.is_array() && std::all_of(value.begin(), value.end(), integral)
                                           : true;
    if (!ok)
      SEGICL_THROW(ConfigError, "model config '" + key + "' must be " +
                                    (d.is_array() ? "a list of integers" : "an integer") + ", not " + value.dump(),
                   origin, "compare with configs/model/cpu.json");
  }
  ModelConfig c;
  try {
#define SEGICL_READ(key) c.key = merged.at(#key).get<decltype(c.key)>()
    SEGICL_READ(architecture);
    SEGICL_READ(resolution);
    SEGICL_READ(in_channels);
    SEGICL_READ(num_condition_tokens);
    SEGICL_READ(cond_dim);
    SEGICL_READ(cond_hidden);
    SEGICL_READ(tokens_per_example);
    SEGICL_READ(latent_channels);
    SEGICL_READ(ae_channels);
    SEGICL_READ(unet_channels);
    SEGICL_READ(unet_channel_mult);
    SEGICL_READ(unet_res_blocks);
    SEGICL_READ(unet_heads);
    SEGICL_READ(cond_spatial_injection);
    SEGICL_READ(use_image_hint);
    SEGICL_READ(hint_channels);
    SEGICL_READ(diffusion_steps);
    SEGICL_READ(noise_schedule);
    SEGICL_READ(prediction);
    SEGICL_READ(vision_width);
    SEGICL_READ(vision_layers);
    SEGICL_READ(vision_heads);
    SEGICL_READ(vision_mlp_dim);
    SEGICL_READ(d_model);
    SEGICL_READ(num_layers);
    SEGICL_READ(num_heads);
    SEGICL_READ(mlp_dim);
    SEGICL_READ(max_text_tokens);
    SEGICL_READ(max_seq_len);
    SEGICL_READ(query_bidirectional);
    SEGICL_READ(lora_rank);
    SEGICL_READ(lora_alpha);
    SEGICL_READ(ae_loss_weight);
    SEGICL_READ(diffusion_loss_weight);
    SEGICL_READ(stage2_decoder_loss_weight);
    SEGICL_READ(crossconv_encoder);
    SEGICL_READ(crossconv_decoder);
    SEGICL_READ(crossconv_text);
    SEGICL_READ(crossconv_patch);
    SEGICL_READ(text_buckets);
    SEGICL_READ(text_dim);
    SEGICL_READ(crossconv_max_context);
#undef SEGICL_READ
  } catch (const config::Json::exception &e) {
    SEGICL_THROW(ConfigError, std::string("model config value has the wrong type: ") + e.what(),
                 origin, "compare with configs/model/cpu.json");
  }
  c.validate(origin);
  return c;
}

ModelConfig load_preset(const std::string &name_or_path) {
  namespace fs = std::filesystem;
  std::vector<std::string> tried;
  auto load = [](const std::string &path) {
    return ModelConfig::from_json(config::read_json_file(path), path);
  };
  if (fs::is_regular_file(name_or_path)) return load(name_or_path);
  tried.push_back(name_or_path);
  std::vector<std::string> roots;
  if (const char *env = std::getenv("SEGICL_CONFIGS"); env && *env) roots.emplace_back(env);
  roots.emplace_back(std::string(SEGICL_SOURCE_DIR) + "/configs");
  for (const auto &root : roots) {
    std::string path = root + "/model/" + name_or_path + ".json";
    if (fs::is_regular_file(path)) return load(path);
    tried.push_back(path);
  }
  std::string list;
  for (const auto &t : tried) list += (list.empty() ? "" : ", ") + t;
  SEGICL_THROW(ConfigError, "model preset '" + name_or_path + "' not found (tried " + list + ")",
               name_or_path, "use tiny, cpu, gpu or paper, a JSON path, or set $SEGICL_CONFIGS");
}

std::vector<std::pair<std::string, int64_t>> count_parameters_by_part(const ModelConfig &c) {
  if (c.is_crossconv()) {
    // Mirrors CrossConvNetImpl: cross conv on (query, support) channels, query conv, support conv
    // (absent in the last decoder block), 1x1 head; text: embedding, 2-layer MLP, FiLM per block.
    const auto &enc = c.crossconv_encoder, &dec = c.crossconv_decoder;
    const int64_t ch = c.in_channels, pp = c.crossconv_patch * c.crossconv_patch;
    int64_t blocks = 0, film = 0, td = c.text_dim;
    for (size_t i = 0; i < enc.size(); ++i) {
      const int64_t qi = i == 0 ? ch * pp : enc[i - 1], si = i == 0 ? (ch + 1) * pp : enc[i - 1];
      blocks += conv(qi + si, enc[i], 3) + 2 * conv(enc[i], enc[i], 3);
      film += linear(td, 2 * enc[i]);
    }
    int64_t below = enc.back();
    for (size_t j = 0; j < dec.size(); ++j) {
      const int64_t in = below + enc[enc.size() - 2 - j];
      blocks += conv(2 * in, dec[j], 3) + (j + 1 == dec.size() ? 1 : 2) * conv(dec[j], dec[j], 3);
      film += linear(td, 2 * dec[j]);
      below = dec[j];
    }
    blocks += conv(below, pp, 1);
    std::vector<std::pair<std::string, int64_t>> parts{{"crossblocks", blocks}};
    if (c.crossconv_text) parts.push_back({"text", c.text_buckets * td + 2 * linear(td, td) + film + ch + 1});
    return parts;
  }
  const int64_t p = c.patch_size(), h = c.cond_hidden, d = c.cond_dim, T = c.num_condition_tokens;
  const int64_t vocab = Tokenizer::kVocabSize;

  int64_t condition = linear(p * p, h) + 2 * linear(h, h) + linear(h, d) + T * d;
  int64_t keyword = vocab * d + linear(d, d);

  const int64_t a = c.ae_channels, z = c.latent_channels;
  int64_t ae = conv(1, a, 3) + conv(a, a, 4) + conv(a, 2 * a, 4) + conv(2 * a, 2 * a, 4) +
               conv(2 * a, 2 * a, 3) + conv(2 * a, z, 3)  // encoder
               + conv(z, 2 * a, 3) + conv(2 * a, 2 * a, 3) + conv(2 * a, 2 * a, 4) +
               conv(2 * a, a, 4) + conv(a, a, 4) + conv(a, 1, 3);  // decoder (ConvT counts alike)

  const int64_t base = c.unet_channels, temb = 4 * base;
  const auto levels = static_cast<int64_t>(c.unet_channel_mult.size());
  auto cond_block = [&](int64_t ch) {
    return norm(ch) + attention(ch, d) + (c.cond_spatial_injection ? conv(d, ch, 1) : 0);
  };
  int64_t unet = linear(base, temb) + linear(temb, temb) + linear(d, temb) + conv(z, base, 3);
  std::vector<int64_t> widths;
  int64_t ch = base;
  for (int64_t i = 0; i < levels; ++i) {
    int64_t out = base * c.unet_channel_mult[i];
    for (int64_t r = 0; r < c.unet_res_blocks; ++r) {
      unet += resblock(ch, out, temb) + cond_block(out);
      ch = out;
    }
    widths.push_back(out);
    if (i + 1 < levels) unet += conv(out, out, 3);
  }
  unet += 2 * resblock(ch, ch, temb) + cond_block(ch);
  for (int64_t i = levels - 1; i >= 0; --i) {
    int64_t out = widths[i];
    if (i + 1 < levels) unet += conv(ch, ch, 3);
    unet += resblock(ch + out, out, temb) + cond_block(out);
    for (int64_t r = 1; r < c.unet_res_blocks; ++r)
      unet += resblock(out, out, temb) + cond_block(out);
    ch = out;
  }
  unet += norm(ch) + conv(ch, z, 3);
  if (c.use_image_hint) {
    const int64_t hc = c.hint_channels;
    unet += conv(c.in_channels, hc, 3) + conv(hc, hc, 4) + conv(hc, 2 * hc, 4) +
            conv(2 * hc, 2 * hc, 4);
    for (int64_t i = 0; i < levels; ++i) {
      if (i > 0) unet += conv(2 * hc, 2 * hc, 3);
      int64_t at = i == 0 ? base : widths[i - 1];
      unet += conv(2 * hc, at, 1);
    }
  }

  const int64_t w = c.vision_width, vp = c.resolution / c.token_grid();
  int64_t vision = conv(c.in_channels, w, vp) + T * w +
                   c.vision_layers * transformer_block(w, c.vision_mlp_dim) + norm(w) +
                   c.tokens_per_example * w + T * w + 2 * norm(w) + attention(w, w) +
                   linear(w, c.d_model);

  const int64_t dm = c.d_model;
  int64_t transformer = vocab * dm + linear(d, dm) + 4 * dm + c.max_seq_len * dm +
                        c.num_layers * transformer_block(dm, c.mlp_dim) + norm(dm);
  int64_t projector = linear(dm, dm) + linear(dm, d);
  return {{"condition_encoder", condition},
          {"keyword_encoder", keyword},
          {"autoencoder", ae},
          {"denoiser", unet},
          {"vision_encoder", vision},
          {"transformer", transformer},
          {"projector", projector}};
}

int64_t count_parameters(const ModelConfig &c) {
  int64_t total = 0;
  for (const auto &part : count_parameters_by_part(c)) total += part.second;
  return total;
}

double flops_per_query(const ModelConfig &c, int num_context, int ddim_steps) {
  if (c.is_crossconv()) {
    // Per level: K cross convs and K support convs, one query conv (multiply-adds, doubled).
    const double pairs = std::max(1, num_context);  // K = 0 runs the one null pair
    const auto &enc = c.crossconv_encoder, &dec = c.crossconv_decoder;
    const double pp = static_cast<double>(c.crossconv_patch * c.crossconv_patch);
    const double ch = static_cast<double>(c.in_channels) * pp;
    double side = static_cast<double>(c.resolution / c.crossconv_patch), mac = 0, qin = ch,
           sin = ch + pp;
    std::vector<double> sides;
    for (size_t i = 0; i < enc.size(); ++i) {
      const double f = static_cast<double>(enc[i]);
      mac += side * side * 9 * (pairs * (qin + sin) * f + pairs * f * f + f * f);
      sides.push_back(side);
      qin = sin = f;
      if (i + 1 < enc.size()) side /= 2;
    }
    double below = static_cast<double>(enc.back());
    for (size_t j = 0; j < dec.size(); ++j) {
      side = sides[sides.size() - 2 - j];
      const double in = below + static_cast<double>(enc[enc.size() - 2 - j]), f = static_cast<double>(dec[j]);
      mac += side * side * 9 * (pairs * 2 * in * f + (j + 1 == dec.size() ? 0 : pairs * f * f) + f * f);
      below = f;
    }
    return 2 * mac;
  }
  // Multiply-adds; doubled at the end. Convs: out_pixels * in * out * k^2.
  auto conv_mac = [](double side, double in, double out, double k) {
    return side * side * in * out * k * k;
  };
  const double K = num_context, T = static_cast<double>(c.num_condition_tokens);
  const double n = static_cast<double>(c.tokens_per_example), R = static_cast<double>(c.resolution);
  const double p = static_cast<double>(c.patch_size()), h = static_cast<double>(c.cond_hidden);
  const double d = static_cast<double>(c.cond_dim);
  double mac = 0;
  // Condition encoder over K context masks.
  mac += K * T * (p * p * h + 2 * h * h + h * d);
  // Vision encoder over K + 1 images: patch embedding, blocks, the
  // cross-attention layer.
  const double w = static_cast<double>(c.vision_width), vm = static_cast<double>(c.vision_mlp_dim);
  auto vision = [&](double queries) {
    return T * static_cast<double>(c.in_channels) * p * p * w +
           c.vision_layers * (T * (4 * w * w + 2 * w * vm) + 2 * T * T * w) + queries * 2 * w * w +
           2 * T * w * w + 2 * queries * T * w + queries * w * c.d_model;
  };
  mac += K * vision(n) + vision(T);
  // Causal transformer over the whole sequence, then the projector on the T
  // query outputs.
  const double dm = static_cast<double>(c.d_model), mlp = static_cast<double>(c.mlp_dim);
  const double L = static_cast<double>(c.max_text_tokens) / 2 + 2 * K * n + T;
  mac += K * n * d * dm + c.num_layers * (L * (4 * dm * dm + 2 * dm * mlp) + 2 * L * L * dm);
  mac += T * (dm * dm + dm * d);
  // Denoiser, per step.
  const double base = static_cast<double>(c.unet_channels);
  double unet = 0, side = static_cast<double>(c.latent_resolution());
  const double z = static_cast<double>(c.latent_channels);
  auto res = [&](double s, double in, double out) {
    return conv_mac(s, in, out, 3) + conv_mac(s, out, out, 3) +
           (in != out ? conv_mac(s, in, out, 1) : 0);
  };
  auto cond = [&](double s, double ch) {
    double q = s * s;
    return 2 * q * ch * ch + 2 * T * d * ch + 2 * q * T * ch +
           (c.cond_spatial_injection ? q * d * ch : 0);
  };
  unet += conv_mac(side, z, base, 3);
  double ch = base;
  std::vector<double> widths, sides;
  for (size_t i = 0; i < c.unet_channel_mult.size(); ++i) {
    double out = base * static_cast<double>(c.unet_channel_mult[i]);
    for (int64_t r = 0; r < c.unet_res_blocks; ++r)
      unet += res(side, ch, out) + cond(side, out), ch = out;
    widths.push_back(out), sides.push_back(side);
    if (i + 1 < c.unet_channel_mult.size()) side /= 2, unet += conv_mac(side, out, out, 3);
  }
  unet += 2 * res(side, ch, ch) + cond(side, ch);
  for (size_t j = widths.size(); j-- > 0;) {
    if (j + 1 < widths.size()) side = sides[j], unet += conv_mac(side, ch, ch, 3);
    unet += res(side, ch + widths[j], widths[j]) + cond(side, widths[j]);
    for (int64_t r = 1; r < c.unet_res_blocks; ++r)
      unet += res(side, widths[j], widths[j]) + cond(side, widths[j]);
    ch = widths[j];
  }
  unet += conv_mac(side, ch, z, 3);
  mac += ddim_steps * unet;
  // Image hint encoder (once: it does not depend on the timestep) and the AE
  // decoder.
  if (c.use_image_hint) {
    const double hc = static_cast<double>(c.hint_channels);
    mac += conv_mac(R, c.in_channels, hc, 3) + conv_mac(R / 2, hc, hc, 4) +
           conv_mac(R / 4, hc, 2 * hc, 4) + conv_mac(R / 8, 2 * hc, 2 * hc, 4);
  }
  const double a = static_cast<double>(c.ae_channels),
               ls = static_cast<double>(c.latent_resolution());
  // A stride-2 4x4 transposed conv does 2x2 multiply-adds per output pixel and
  // channel pair.
  mac += conv_mac(ls, z, 2 * a, 3) + conv_mac(ls, 2 * a, 2 * a, 3) +
         conv_mac(2 * ls, 2 * a, 2 * a, 2) + conv_mac(4 * ls, 2 * a, a, 2) +
         conv_mac(8 * ls, a, a, 2) + conv_mac(8 * ls, a, 1, 3);
  return 2 * mac;
}

}  // namespace segicl::models
