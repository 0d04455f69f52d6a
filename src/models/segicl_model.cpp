// SegICLModel: losses, stage switching and the inference path (see
// segicl_model.h).
#include "segicl/models/segicl_model.h"

#include "segicl/core/error.h"
#include "segicl/models/layers.h"

namespace segicl::models {
namespace {

torch::Tensor soft_dice_loss(const torch::Tensor &logits, const torch::Tensor &target) {
  auto p = torch::sigmoid(logits).flatten(1);
  auto t = target.flatten(1);
  auto dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1);
  return 1 - dice.mean();
}

ModelConfig validated(const ModelConfig &c) {
  c.validate("model config");
  return c;
}

bool is_lora_base(const std::string &name) {
  return name.find("base.weight") != std::string::npos ||
         name.find("base.bias") != std::string::npos;
}

void require_architecture(const ModelConfig &config, bool crossconv, const char *what) {
  if (config.is_crossconv() != crossconv)
    SEGICL_THROW(UsageError,
                 std::string(what) + " does not apply to architecture \"" + config.architecture + "\"", "",
                 crossconv ? "use stage1_loss/stage2_loss for the segicl architecture"
                           : "crossconv models train in one stage with crossconv_loss");
}

}  // namespace

SegICLModelImpl::SegICLModelImpl(const ModelConfig &config)
    : config_(validated(config)), tokenizer_(config.max_text_tokens) {
  if (config_.is_crossconv()) {
    crossconv = register_module("crossconv", CrossConvNet(config_));
    return;
  }
  condition_encoder = register_module("condition_encoder", ConditionEncoder(config_));
  keyword_encoder = register_module("keyword_encoder", KeywordEncoder(config_));
  autoencoder = register_module("autoencoder", MaskAutoencoder(config_));
  denoiser = register_module("denoiser", LatentDenoiser(config_));
  vision_encoder = register_module("vision_encoder", VisionEncoder(config_));
  transformer = register_module("transformer", CausalTransformer(config_));
  projector = register_module("projector", Projector(config_));
}

torch::Device SegICLModelImpl::device() const { return parameters().front().device(); }

torch::Tensor SegICLModelImpl::tokenize(const std::vector<std::string> &instructions,
                                        const torch::Device &device) const {
  std::vector<std::vector<int64_t>> rows;
  for (const auto &text : instructions) rows.push_back(tokenizer_.encode(text));
  return padded_ids(rows, Tokenizer::kPad, device);
}

Stage1Losses SegICLModelImpl::stage1_loss(const torch::Tensor &masks, const torch::Tensor &images,
                                          const std::vector<std::string> &instructions) {
  require_architecture(config_, false, "stage 1 loss");
  const int64_t r = config_.resolution;
  check_shape(masks, {-1, 1, r, r}, "masks");
  const int64_t b = masks.size(0);
  if (images.defined()) check_shape(images, {b, config_.in_channels, r, r}, "images");
  if (!instructions.empty() && static_cast<int64_t>(instructions.size()) != b) {
    SEGICL_THROW(ShapeError,
                 "instructions: expected " + std::to_string(b) + " strings, got " +
                     std::to_string(instructions.size()),
                 "", "pass one per mask or none");
  }
  Stage1Losses out;
  auto latent = autoencoder->encode(masks);
  auto logits = autoencoder->decode(latent);
  out.reconstruction =
      torch::binary_cross_entropy_with_logits(logits, masks) + soft_dice_loss(logits, masks);
  auto cond = condition_encoder(masks);
  auto keyword = keyword_encoder(
      tokenize(instructions.empty() ? std::vector<std::string>(b) : instructions, masks.device()));
  auto t = torch::randint(config_.diffusion_steps, {b},
                          torch::TensorOptions().dtype(torch::kLong).device(masks.device()));
  // The latent is detached: the AE learns from reconstruction only, so the
  // diffusion loss cannot shrink its own target by collapsing the latent.
  auto z0 = latent.detach();
  auto noise = torch::randn_like(z0);
  auto eps = denoiser(denoiser->q_sample(z0, t, noise), t, cond, keyword, images);
  out.diffusion = torch::mse_loss(eps, denoiser->target(z0, t, noise));
  out.total =
      config_.ae_loss_weight * out.reconstruction + config_.diffusion_loss_weight * out.diffusion;
  return out;
}

std::pair<torch::Tensor, torch::Tensor> SegICLModelImpl::build_prefix(
    const torch::Tensor &ids, const torch::Tensor &context_images,
    const torch::Tensor &context_masks, const torch::Tensor &context_valid) {
  const int64_t b = ids.size(0), r = config_.resolution, n = config_.tokens_per_example;
  const int64_t k = context_images.defined() ? context_images.size(1) : 0;
  const auto device = ids.device();
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  std::vector<torch::Tensor> parts{transformer->embed_text(ids)};
  std::vector<torch::Tensor> segments{
      torch::full({ids.size(1)}, static_cast<int64_t>(Segment::kText), long_opts)};
  std::vector<torch::Tensor> valid{ids != Tokenizer::kPad};
  if (k > 0) {
    check_shape(context_images, {b, k, config_.in_channels, r, r}, "context_images");
    check_shape(context_masks, {b, k, 1, r, r}, "context_masks");
    auto images = vision_encoder->encode_context(context_images.flatten(0, 1)).view({b, k, n, -1});
    torch::Tensor pooled;
    {
      // The condition encoder is the frozen stage-1 teacher; its context tokens
      // are inputs here.
      torch::NoGradGuard no_grad;
      pooled = condition_encoder->pool(condition_encoder(context_masks.flatten(0, 1)), n);
    }
    auto masks = transformer->embed_masks(pooled).view({b, k, n, -1});
    parts.push_back(torch::stack({images, masks}, 2).reshape({b, k * 2 * n, -1}));
    auto pair_segments =
        torch::cat({torch::full({n}, static_cast<int64_t>(Segment::kContextImage), long_opts),
                    torch::full({n}, static_cast<int64_t>(Segment::kContextMask), long_opts)});
    segments.push_back(pair_segments.repeat({k}));
    torch::Tensor pair_valid = context_valid.defined()
                                   ? context_valid.to(device, torch::kBool)
                                   : torch::ones({b, k}, long_opts.dtype(torch::kBool));
    check_shape(pair_valid, {b, k}, "context_valid");
    valid.push_back(pair_valid.unsqueeze(2).expand({b, k, 2 * n}).reshape({b, k * 2 * n}));
  }
  auto prefix = transformer->add_embeddings(torch::cat(parts, 1), torch::cat(segments), 0);
  // Positions of the query come after the prefix; fail early if they cannot
  // fit.
  if (prefix.size(1) + config_.num_condition_tokens > config_.max_seq_len) {
    SEGICL_THROW(UsageError,
                 "episode of " + std::to_string(k) + " context pairs needs " +
                     std::to_string(prefix.size(1) + config_.num_condition_tokens) +
                     " positions, max_seq_len is " + std::to_string(config_.max_seq_len),
                 "", "use at most " + std::to_string(config_.max_context()) + " context pairs");
  }
  return {prefix, torch::cat(valid, 1)};
}

torch::Tensor SegICLModelImpl::run_query(const torch::Tensor &prefix,
                                         const torch::Tensor &prefix_valid,
                                         const torch::Tensor &query_images) {
  const int64_t r = config_.resolution, t_len = config_.num_condition_tokens;
  check_shape(query_images, {-1, config_.in_channels, r, r}, "query_images");
  const int64_t b = query_images.size(0), lp = prefix.size(1);
  auto query = vision_encoder->encode_query(query_images);
  auto segments = torch::full({t_len}, static_cast<int64_t>(Segment::kQuery),
                              torch::TensorOptions().dtype(torch::kLong).device(query.device()));
  query = transformer->add_embeddings(query, segments, lp);
  auto x = torch::cat({prefix.expand({b, lp, prefix.size(2)}), query}, 1);
  auto valid = torch::cat({prefix_valid.expand({b, lp}),
                           torch::ones({b, t_len}, prefix_valid.options().dtype(torch::kBool))},
                          1);
  auto hidden = transformer(x, valid, lp);
  return projector(hidden.slice(1, lp));
}

torch::Tensor SegICLModelImpl::forward_condition(const data::EpisodeBatch &batch) {
  const int64_t b = batch.batch_size();
  std::vector<std::string> instructions = batch.instructions;
  if (instructions.empty()) instructions.resize(static_cast<size_t>(b));
  if (static_cast<int64_t>(instructions.size()) != b) {
    SEGICL_THROW(ShapeError, "batch.instructions: expected " + std::to_string(b) + " strings", "",
                 "give one (possibly empty) instruction per episode");
  }
  auto ids = tokenize(instructions, batch.query_images.device());
  torch::Tensor images, masks;
  if (batch.num_context() > 0) images = batch.context_images, masks = batch.context_masks;
  auto [prefix, valid] = build_prefix(ids, images, masks, batch.context_valid);
  return run_query(prefix, valid, batch.query_images);
}

torch::Tensor SegICLModelImpl::crossconv_loss(const data::EpisodeBatch &batch) {
  require_architecture(config_, true, "crossconv loss");
  if (!batch.query_masks.defined())
    SEGICL_THROW(UsageError, "crossconv_loss needs batch.query_masks", "", "use training episodes");
  auto logits = crossconv(batch.query_images, batch.context_images, batch.context_masks, batch.context_valid,
                          crossconv->word_ids(batch.instructions, batch.query_images.device()));
  return torch::binary_cross_entropy_with_logits(logits, batch.query_masks) +
         soft_dice_loss(logits, batch.query_masks);
}

torch::Tensor SegICLModelImpl::stage2_loss(const data::EpisodeBatch &batch) {
  require_architecture(config_, false, "stage 2 loss");
  if (!batch.query_masks.defined()) {
    SEGICL_THROW(UsageError, "stage2_loss needs batch.query_masks", "", "use training episodes");
  }
  torch::Tensor target;
  {
    torch::NoGradGuard no_grad;
    target = condition_encoder(batch.query_masks);
  }
  auto tokens = forward_condition(batch);
  auto loss = torch::mse_loss(tokens, target);
  if (config_.stage2_decoder_loss_weight <= 0) return loss;
  // Beyond the paper: Eq. 5 alone let S regress to the mean condition token, which the decoder
  // renders as background (measured on the cpu preset: validation Dice 0.00 after 400 steps while
  // the MSE plateaued). This term scores S through the frozen decoder as inference uses it: the
  // x0 estimate of the first DDIM step (pure noise at the last timestep, the query image as
  // hint), decoded by the frozen autoencoder, against the query mask (BCE + soft Dice).
  const int64_t b = tokens.size(0), s = config_.latent_resolution();
  const auto device = tokens.device();
  torch::Tensor keyword;
  {
    torch::NoGradGuard no_grad;
    keyword = keyword_encoder(tokenize(batch.instructions.empty() ? std::vector<std::string>(b)
                                                                   : batch.instructions,
                                       device));
  }
  const int64_t last = config_.diffusion_steps - 1;
  auto noise = torch::randn({b, config_.latent_channels, s, s}, tokens.options());
  auto t = torch::full({b}, last, torch::TensorOptions().dtype(torch::kLong).device(device));
  auto out = denoiser(noise, t, tokens, keyword, batch.query_images);
  const double a = denoiser->schedule().alpha_bar(last);
  auto x0 = config_.prediction == "v" ? std::sqrt(a) * noise - std::sqrt(1 - a) * out
                                      : (noise - std::sqrt(1 - a) * out) / std::sqrt(a);
  auto logits = autoencoder->decode(x0.clamp(-1.0, 1.0));
  auto decoded = torch::binary_cross_entropy_with_logits(logits, batch.query_masks) +
                 soft_dice_loss(logits, batch.query_masks);
  return loss + config_.stage2_decoder_loss_weight * decoded;
}

void SegICLModelImpl::set_stage(int stage) {
  auto trainable = parameters_for_stage(stage);
  for (auto &p : parameters()) p.set_requires_grad(false);
  for (auto &p : trainable) p.set_requires_grad(true);
}

std::vector<torch::Tensor> SegICLModelImpl::parameters_for_stage(int stage) {
  std::vector<torch::Tensor> out;
  if (config_.is_crossconv()) {
    if (stage != 1)
      SEGICL_THROW(UsageError, "crossconv models train in one stage (--stage 1), got " + std::to_string(stage), "",
                   "pass --stage 1");
    return parameters();
  }
  auto add = [&](const torch::nn::Module &module, bool skip_lora_base) {
    for (const auto &item : module.named_parameters()) {
      if (skip_lora_base && is_lora_base(item.key())) continue;
      out.push_back(item.value());
    }
  };
  if (stage == 1) {
    add(*condition_encoder, false);
    add(*keyword_encoder, false);
    add(*autoencoder, false);
    add(*denoiser, false);
  } else if (stage == 2) {
    add(*vision_encoder, false);
    add(*transformer, lora_enabled_);
    add(*projector, false);
  } else {
    SEGICL_THROW(UsageError, "training stage must be 1 or 2, got " + std::to_string(stage), "",
                 "stage 1 trains the decoder, stage 2 the multi-modal encoder");
  }
  return out;
}

void SegICLModelImpl::enable_lora(int64_t rank, double alpha) {
  require_architecture(config_, false, "LoRA");
  transformer->enable_lora(rank, alpha);
  lora_enabled_ = true;
  // Adapters are created on the CPU; follow the model to wherever it lives.
  transformer->to(device());
}

ContextEncoding SegICLModelImpl::encode_context(const torch::Tensor &context_images,
                                                const torch::Tensor &context_masks,
                                                const std::string &instruction) {
  torch::NoGradGuard no_grad;
  ContextEncoding out;
  const auto dev = device();
  if (config_.is_crossconv()) {
    if (context_images.defined() && context_images.size(0) > 0) {
      const int64_t r = config_.resolution;
      check_shape(context_images, {-1, config_.in_channels, r, r}, "context_images");
      check_shape(context_masks, {context_images.size(0), 1, r, r}, "context_masks");
      out.context_images = context_images.to(dev).unsqueeze(0);
      out.context_masks = context_masks.to(dev).unsqueeze(0);
      out.num_context = context_images.size(0);
    } else {
      crossconv->require_example(false);  // fail here, before any query slice is prepared
    }
    out.word_ids = crossconv->word_ids({instruction}, dev);
    return out;
  }
  auto ids = tokenize({instruction}, dev);
  torch::Tensor images, masks;
  if (context_images.defined() && context_images.size(0) > 0) {
    const int64_t r = config_.resolution;
    check_shape(context_images, {-1, config_.in_channels, r, r}, "context_images");
    check_shape(context_masks, {context_images.size(0), 1, r, r}, "context_masks");
    images = context_images.to(dev).unsqueeze(0);
    masks = context_masks.to(dev).unsqueeze(0);
    out.num_context = context_images.size(0);
  }
  std::tie(out.prefix, out.prefix_valid) = build_prefix(ids, images, masks, {});
  out.keyword = keyword_encoder(ids);
  return out;
}

torch::Tensor SegICLModelImpl::predict_condition(const ContextEncoding &context,
                                                 const torch::Tensor &query_images) {
  torch::NoGradGuard no_grad;
  require_architecture(config_, false, "predict_condition");
  return run_query(context.prefix, context.prefix_valid, query_images.to(context.prefix.device()));
}

Prediction SegICLModelImpl::decode_condition(const torch::Tensor &tokens,
                                             const torch::Tensor &keyword,
                                             const torch::Tensor &query_images,
                                             const SegmentOptions &options) {
  torch::NoGradGuard no_grad;
  require_architecture(config_, false, "decode_condition");
  if (options.num_samples < 1) SEGICL_THROW(UsageError, "num_samples must be >= 1", "", "");
  const int64_t b = tokens.size(0), ns = options.num_samples, r = config_.resolution;
  auto kw = keyword.expand({b, keyword.size(1)}).repeat({ns, 1});
  torch::Tensor hint;
  if (query_images.defined()) hint = query_images.to(tokens.device()).repeat({ns, 1, 1, 1});
  auto latents = denoiser->ddim_sample(tokens.repeat({ns, 1, 1}), kw, hint, options.ddim_steps,
                                       options.seed, options.eta);
  auto probs = torch::sigmoid(autoencoder->decode(latents)).view({ns, b, 1, r, r});
  Prediction out;
  out.probability = probs.mean(0);
  out.variance = probs.var(0, /*unbiased=*/false);
  out.tokens = tokens;
  return out;
}

Prediction SegICLModelImpl::segment(const ContextEncoding &context,
                                    const torch::Tensor &query_images,
                                    const SegmentOptions &options) {
  torch::NoGradGuard no_grad;
  if (config_.is_crossconv()) return segment_crossconv(context, query_images, options);
  auto query = query_images.to(context.prefix.device());
  return decode_condition(predict_condition(context, query), context.keyword, query, options);
}

Prediction SegICLModelImpl::segment_crossconv(const ContextEncoding &context, const torch::Tensor &query_images,
                                              const SegmentOptions &options) {
  if (options.num_samples < 1) SEGICL_THROW(UsageError, "num_samples must be >= 1", "", "");
  const auto dev = device();
  auto query = query_images.to(dev);
  const int64_t b = query.size(0);
  torch::Tensor images, masks, valid;
  if (context.num_context > 0) {
    images = context.context_images.expand({b, -1, -1, -1, -1});
    masks = context.context_masks.expand({b, -1, -1, -1, -1});
    valid = torch::ones({b, context.num_context}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  }
  auto ids = context.word_ids.expand({b, -1});
  // The network is deterministic, so "samples" are test-time flips (identity, left-right,
  // up-down, both, then again): their spread is the uncertainty map, their mean the probability.
  std::vector<torch::Tensor> probs;
  for (int64_t i = 0; i < options.num_samples; ++i) {
    std::vector<int64_t> dims;
    if (i % 4 == 1 || i % 4 == 3) dims.push_back(-1);
    if (i % 4 == 2 || i % 4 == 3) dims.push_back(-2);
    auto flip = [&](const torch::Tensor &t) { return dims.empty() || !t.defined() ? t : t.flip(dims); };
    auto logits = crossconv(flip(query), flip(images), flip(masks), valid, ids);
    probs.push_back(flip(torch::sigmoid(logits)));
  }
  auto stacked = torch::stack(probs);
  Prediction out;
  out.probability = stacked.mean(0);
  out.variance = stacked.var(0, /*unbiased=*/false);
  return out;
}

}  // namespace segicl::models
