// ModelConfig: every hyper-parameter of the SegICL model (paper §3-4 at our
// scale), its JSON form, preset lookup (configs/model/<name>.json) and analytic
// parameter/FLOP counts. It is not a module and includes no torch header: tools
// can inspect a preset (even `paper`, which we never build: 7B fp32 weights
// exceed our RAM) without touching LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "segicl/core/config.h"

namespace segicl::models {

// Like leveldb's Options: plain data, defaults are the `cpu` preset.
// Thread-safe as a value.
struct ModelConfig {
  // Which network: "segicl" (the paper: vision encoder + causal transformer + latent diffusion
  // decoder, two training stages) or "crossconv" (UniverSeg's CrossBlock network, optionally with
  // text FiLM; one stage; see crossconv.h). The sections below apply to the architecture they
  // name; the others are ignored (but still validated, so keep their defaults).
  std::string architecture = "segicl";
  // ---- geometry
  // -------------------------------------------------------------------------------
  int64_t resolution = 128;  // R: side of images and masks in pixels; a multiple of 8 (AE stride)
  int64_t in_channels = 1;   // C: image channels (1 for CT/MR, 3 for fundus photographs)

  // ---- condition encoder (§3.2/3.3: a shared 4-layer MLP over mask patches)
  // -------------------
  int64_t num_condition_tokens = 64;  // T = g*g tokens per mask; patch side = R / g (paper: 256)
  int64_t cond_dim = 64;              // d_cond: width of condition tokens and of S (Eq. 2)
  int64_t cond_hidden = 256;          // hidden width of the 4-layer MLP
  int64_t tokens_per_example = 16;    // n: tokens per context image and per context mask (a square)

  // ---- mask autoencoder (latent space of the diffusion decoder)
  // ------------------------------
  int64_t latent_channels = 4;  // z channels of the latent [B, z, R/8, R/8]
  int64_t ae_channels = 32;     // base conv width of the autoencoder (2x after the first stride)

  // ---- latent denoiser (§3.4, Eq. 6: SD + ControlNet at our scale)
  // ---------------------------
  int64_t unet_channels = 48;                          // base UNet width; time embedding is 4x this
  std::vector<int64_t> unet_channel_mult = {1, 2, 2};  // width multiplier per resolution level
  int64_t unet_res_blocks = 1;                         // ResBlocks per level (encoder and decoder)
  int64_t unet_heads = 4;                              // heads of the cross-attention to c_t
  bool cond_spatial_injection =
      true;                        // also add c_t laid out on its g x g grid (1x1 conv) per level
  bool use_image_hint = true;      // ControlNet-style query-image hint (zero-initialised convs)
  int64_t hint_channels = 32;      // base width of the hint encoder
  int64_t diffusion_steps = 1000;  // training timesteps of the noise schedule
  std::string noise_schedule = "cosine";  // "cosine" (Nichol & Dhariwal) or "scaled_linear" (SD)
  // What the UNet predicts: "epsilon" (paper Eq. 6) or "v" (Salimans & Ho 2022;
  // the same MSE objective re-targeted to v = sqrt(ab) eps - sqrt(1 - ab) z0).
  // "v" is our default: with epsilon the x0 estimate at the noisiest steps
  // divides by sqrt(ab) ~ 0, and the tiny preset reached only Dice 0.5 through
  // 10 DDIM steps after 1000 training steps (AE alone: 0.97).
  std::string prediction = "v";

  // ---- vision encoder (§3.3: ViT + one randomly initialised cross-attention
  // layer) -----------
  int64_t vision_width = 128;    // ViT width
  int64_t vision_layers = 4;     // pre-LN blocks
  int64_t vision_heads = 4;      // heads (must divide vision_width)
  int64_t vision_mlp_dim = 512;  // MLP hidden width

  // ---- causal transformer (the paper's LLM) and projector
  // ------------------------------------
  int64_t d_model = 192;         // width
  int64_t num_layers = 4;        // pre-LN blocks
  int64_t num_heads = 4;         // heads (must divide d_model)
  int64_t mlp_dim = 768;         // MLP hidden width (GELU, two matrices)
  int64_t max_text_tokens = 64;  // instruction length incl. BOS and EOS; longer text is truncated
  int64_t max_seq_len = 640;     // learned positions; bounds the number of context pairs
  bool query_bidirectional = true;  // query tokens also see each other (prefix-LM over the query)

  // ---- LoRA for stage 2 (§4.2); 0 = full fine-tuning. Applied by
  // enable_lora(), not at build --
  int64_t lora_rank = 0;     // adapter rank r
  double lora_alpha = 16.0;  // adapter scale numerator (scale = alpha / r)

  // ---- loss weights (stage 1)
  // -----------------------------------------------------------------
  double ae_loss_weight = 1.0;         // weight of BCE + soft Dice of the autoencoder
  double diffusion_loss_weight = 1.0;  // weight of the epsilon MSE (Eq. 6)
  // Stage 2: weight of the decoder-aware term (S through the frozen decoder's first DDIM x0
  // estimate and AE, BCE + soft Dice vs the query mask) added to Eq. 5; 0 = the paper's loss only.
  // Off by default: on the tiny learning test it raised 0-example Dice (0.26 -> 0.34) but erased
  // the gain from examples (3 examples 0.33), and on the cpu preset neither loss left the
  // all-background plateau within 600 CPU steps (see models/README.md).
  double stage2_decoder_loss_weight = 0.0;

  // ---- crossconv (architecture "crossconv")
  std::vector<int64_t> crossconv_encoder = {64, 64, 64, 64};  // CrossBlock widths per level (UniverSeg)
  std::vector<int64_t> crossconv_decoder = {64, 64, 64};      // one fewer than the encoder
  bool crossconv_text = false;         // FiLM by the instruction + a null pair for K = 0
  // Sub-pixel stem: inputs are pixel-unshuffled by this factor (R/p grid, C*p*p channels) and the
  // logits pixel-shuffled back to R, so the network costs ~p^2 less at the same output size
  // (1 = UniverSeg as published).
  int64_t crossconv_patch = 1;
  int64_t text_buckets = 4096;         // hashed word vocabulary of the text embedding
  int64_t text_dim = 64;               // width of the text embedding
  int64_t crossconv_max_context = 16;  // most support pairs per query
  bool is_crossconv() const { return architecture == "crossconv"; }
  // True when the model cannot run without an example (crossconv without text: UniverSeg as
  // published); every k = 0 decision (training range, eval rows, inference errors) asks this.
  bool needs_examples() const { return is_crossconv() && !crossconv_text; }
  // Derived sizes.
  int64_t token_grid() const;    // g = sqrt(T)
  int64_t patch_size() const;    // R / g
  int64_t example_grid() const;  // sqrt(n)
  int64_t latent_resolution() const { return resolution / 8; }
  // Largest K whose sequence fits max_seq_len with a full-length instruction.
  int64_t max_context() const;

  // Throws ConfigError (naming `origin`) if sizes are inconsistent.
  void validate(const std::string &origin) const;

  config::Json to_json() const;
  // Strict: keys absent from to_json() of the defaults are a ConfigError naming
  // `origin`.
  static ModelConfig from_json(const config::Json &j, const std::string &origin);
};

// Finds and reads a preset: `name_or_path` is a JSON file path if it exists,
// else a preset name looked up as <dir>/model/<name>.json in $SEGICL_CONFIGS,
// then in the source tree's configs/. Throws ConfigError naming the candidates
// tried when none exists.
ModelConfig load_preset(const std::string &name_or_path);

// Exact number of parameters SegICLModel(config) has (LoRA adapters excluded),
// computed from the config alone so that presets too large to build (paper) can
// be sized.
int64_t count_parameters(const ModelConfig &config);

// Parameter count per component, same order as the model: condition_encoder,
// keyword_encoder, autoencoder, denoiser, vision_encoder, transformer,
// projector.
std::vector<std::pair<std::string, int64_t>> count_parameters_by_part(const ModelConfig &config);

// ESTIMATE of inference FLOPs (2 x multiply-adds) for one query of batch 1 with
// `num_context` pairs and one diffusion sample of `ddim_steps` steps: encoders,
// transformer (full L^2 attention), denoiser per step and one AE decode.
// Ignores norms, activations and softmax.
double flops_per_query(const ModelConfig &config, int num_context, int ddim_steps);

}  // namespace segicl::models
