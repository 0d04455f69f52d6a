// SegICLModel: the whole SegICL network (paper Eq. 4): M' = Dec(Proj(Enc(X_img,
// X_text))). Holds the stage-1 group (condition encoder, keyword encoder, mask
// autoencoder, latent denoiser) and the stage-2 group (vision encoder, causal
// transformer with its text embedding, projector), their two training losses,
// and the inference API (encode the context once, then segment any number of
// query slices with it). Not a trainer or checkpoint format: optimisers,
// schedules and checkpoint metadata live in segicl_train; this class only
// defines parameters (stable names = checkpoint keys) and math. Thread-safety:
// concurrent inference calls are fine (they run under NoGradGuard and do not
// mutate the module); training calls are not.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "segicl/data/episode.h"
#include "segicl/models/causal_transformer.h"
#include "segicl/models/condition_encoder.h"
#include "segicl/models/crossconv.h"
#include "segicl/models/config.h"
#include "segicl/models/latent_denoiser.h"
#include "segicl/models/mask_autoencoder.h"
#include "segicl/models/tokenizer.h"
#include "segicl/models/vision_encoder.h"

namespace segicl::models {

struct Stage1Losses {
  torch::Tensor reconstruction;  // autoencoder BCE + soft Dice (scalar)
  torch::Tensor diffusion;       // MSE of Eq. 6 (epsilon or v target) on the detached AE latent
  torch::Tensor total;           // weighted sum (config ae_loss_weight, diffusion_loss_weight)
};

// The embedded prefix [text][ctx image 1][ctx mask 1]... of one episode,
// computed once and reused for every query slice of a volume. Immutable after
// creation.
struct ContextEncoding {
  torch::Tensor prefix;        // [1, Lp, d_model]: token + segment + position embeddings
  torch::Tensor prefix_valid;  // [1, Lp] bool
  torch::Tensor keyword;       // [1, cond_dim] c_k of the instruction (zeros without text)
  int64_t num_context = 0;
  // Architecture "crossconv": the pairs themselves (every query convolves with them) and the
  // instruction's word ids; the fields above stay undefined.
  torch::Tensor context_images;  // [1, K, C, R, R]
  torch::Tensor context_masks;   // [1, K, 1, R, R]
  torch::Tensor word_ids;        // [1, L]
};

struct SegmentOptions {
  int64_t ddim_steps = 4;   // DDIM steps per sample (1..diffusion_steps)
  int64_t num_samples = 1;  // diffusion samples averaged (§4.2 averages 5)
  uint64_t seed = 0;        // noise seed: same seed, same output (on the same device)
  double eta = 0.0;         // DDIM eta; 0 = deterministic given the initial noise
};

struct Prediction {
  torch::Tensor probability;  // [B, 1, R, R] mean over samples of sigmoid(AE decode)
  torch::Tensor variance;     // [B, 1, R, R] population variance over samples (0
                              // for 1 sample)
  torch::Tensor tokens;       // S [B, T, cond_dim] from the projector
};

class SegICLModelImpl : public torch::nn::Module {
 public:
  // Validates the config (ConfigError) and builds every part.
  explicit SegICLModelImpl(const ModelConfig &config);

  const ModelConfig &config() const { return config_; }
  const Tokenizer &tokenizer() const { return tokenizer_; }

  // Stage 1 (§4.2): masks [B, 1, R, R] {0,1}, images [B, C, R, R] in [0, 1]
  // (the hint; may be undefined), instructions: B strings or empty (= no text).
  // Timesteps and noise come from torch's global generator (seed it with
  // torch::manual_seed in the trainer).
  Stage1Losses stage1_loss(const torch::Tensor &masks, const torch::Tensor &images,
                           const std::vector<std::string> &instructions);

  // Stage 2, Eq. 5: MSE between S and the frozen ConditionEncoder(query_masks).
  // REQUIRES batch.query_masks defined. K = 0 is allowed (then context tensors
  // may be undefined).
  torch::Tensor stage2_loss(const data::EpisodeBatch &batch);
  // Architecture "crossconv" (its one stage): BCE + soft Dice of the query mask logits.
  torch::Tensor crossconv_loss(const data::EpisodeBatch &batch);
  // S [B, T, cond_dim] for a batch of episodes (with gradients when enabled).
  torch::Tensor forward_condition(const data::EpisodeBatch &batch);

  // Freezes the other stage's group: stage 1 trains condition encoder, keyword
  // encoder, autoencoder, denoiser; stage 2 trains vision encoder, transformer,
  // projector (LoRA base weights stay frozen once enable_lora was called).
  // UsageError for other values.
  void set_stage(int stage);
  // The parameters `stage` trains (see set_stage), whatever the current
  // requires_grad flags.
  std::vector<torch::Tensor> parameters_for_stage(int stage);
  // LoRA on the causal transformer (§4.2); call before building the stage-2
  // optimiser.
  void enable_lora(int64_t rank, double alpha);

  // context_images [K, C, R, R], context_masks [K, 1, R, R] (K may be 0;
  // undefined tensors mean K = 0), instruction may be "". UsageError if K
  // exceeds what max_seq_len allows.
  ContextEncoding encode_context(const torch::Tensor &context_images,
                                 const torch::Tensor &context_masks,
                                 const std::string &instruction);
  // query_images [B, C, R, R] -> S [B, T, cond_dim] (the prefix is shared by
  // the B queries).
  torch::Tensor predict_condition(const ContextEncoding &context,
                                  const torch::Tensor &query_images);
  // Full inference: S -> DDIM in latent space (query image as hint) -> AE
  // decode.
  Prediction segment(const ContextEncoding &context, const torch::Tensor &query_images,
                     const SegmentOptions &options = {});
  // Decoder only: condition tokens [B, T, d] (e.g. ConditionEncoder of a
  // ground-truth mask)
  // -> probability/variance, as segment() does after predict_condition.
  Prediction decode_condition(const torch::Tensor &tokens, const torch::Tensor &keyword,
                              const torch::Tensor &query_images, const SegmentOptions &options);

  // Token ids [B, L] (PAD-padded) of B instructions, on `device`.
  torch::Tensor tokenize(const std::vector<std::string> &instructions,
                         const torch::Device &device) const;
  torch::Device device() const;

  ConditionEncoder condition_encoder{nullptr};
  KeywordEncoder keyword_encoder{nullptr};
  MaskAutoencoder autoencoder{nullptr};
  LatentDenoiser denoiser{nullptr};
  VisionEncoder vision_encoder{nullptr};
  CausalTransformer transformer{nullptr};
  Projector projector{nullptr};
  CrossConvNet crossconv{nullptr};  // only for architecture "crossconv" (then the others are null)

 private:
  // Embedded prefix [B, Lp, d_model] and its validity [B, Lp].
  std::pair<torch::Tensor, torch::Tensor> build_prefix(const torch::Tensor &ids,
                                                       const torch::Tensor &context_images,
                                                       const torch::Tensor &context_masks,
                                                       const torch::Tensor &context_valid);
  Prediction segment_crossconv(const ContextEncoding &context, const torch::Tensor &query_images,
                               const SegmentOptions &options);
  torch::Tensor run_query(const torch::Tensor &prefix, const torch::Tensor &prefix_valid,
                          const torch::Tensor &query_images);

  ModelConfig config_;
  Tokenizer tokenizer_;
  bool lora_enabled_ = false;
};
TORCH_MODULE(SegICLModel);

}  // namespace segicl::models
