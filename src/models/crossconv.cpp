// CrossConvNet (see crossconv.h): UniverSeg's CrossBlock encoder-decoder plus optional text FiLM.
#include "segicl/models/crossconv.h"

#include <cctype>

#include "segicl/core/error.h"
#include "segicl/models/layers.h"

namespace segicl::models {
namespace {

namespace F = torch::nn::functional;

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

// UniverSeg uses LeakyReLU after every conv (its ConvOp).
torch::Tensor act(const torch::Tensor& x) {
  return F::leaky_relu(x, F::LeakyReLUFuncOptions().negative_slope(0.01));
}

}  // namespace

std::vector<int64_t> hash_words(const std::string& text, int64_t buckets) {
  std::vector<int64_t> ids;
  uint64_t hash = 0;
  bool in_word = false;
  auto flush = [&] {
    if (in_word) ids.push_back(1 + static_cast<int64_t>(hash % static_cast<uint64_t>(buckets - 1)));
    in_word = false;
  };
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      if (!in_word) hash = 1469598103934665603ull, in_word = true;
      hash = (hash ^ static_cast<uint64_t>(std::tolower(c))) * 1099511628211ull;
    } else {
      flush();
    }
  }
  flush();
  return ids;
}

CrossBlockImpl::CrossBlockImpl(int64_t query_in, int64_t support_in, int64_t features,
                               bool with_support_output) {
  cross_ = register_module("cross", conv3x3(query_in + support_in, features));
  query_ = register_module("query", conv3x3(features, features));
  if (with_support_output) support_ = register_module("support", conv3x3(features, features));
}

std::pair<torch::Tensor, torch::Tensor> CrossBlockImpl::forward(const torch::Tensor& q,
                                                                const torch::Tensor& s,
                                                                const torch::Tensor& valid,
                                                                const torch::Tensor& film) {
  const int64_t b = s.size(0), k = s.size(1), h = s.size(3), w = s.size(4);
  // Every (query, support) pair through one shared conv: [B*K, Fq + Fs, H, W].
  auto pairs = torch::cat({q.unsqueeze(1).expand({b, k, q.size(1), h, w}), s}, 2).flatten(0, 1);
  auto fused = act(cross_(pairs));
  const int64_t f = fused.size(1);
  auto fused5 = fused.view({b, k, f, h, w});
  // The query keeps the mean over real supports (padding pairs weigh 0).
  auto weight = valid.to(fused.scalar_type()).view({b, k, 1, 1, 1});
  auto mean = (fused5 * weight).sum(1) / weight.sum(1).clamp_min(1.0);
  auto query = act(query_(mean));
  if (film.defined()) {
    auto parts = film.view({b, 2, f, 1, 1});
    query = query * (1 + parts.select(1, 0)) + parts.select(1, 1);
  }
  torch::Tensor support;
  if (!support_.is_empty()) support = act(support_(fused)).view({b, k, f, h, w});
  return {query, support};
}

CrossConvNetImpl::CrossConvNetImpl(const ModelConfig& config) : config_(config) {
  config_.validate("model config");
  const auto& enc = config_.crossconv_encoder;
  const auto& dec = config_.crossconv_decoder;
  const int64_t c = config_.in_channels, pp = config_.crossconv_patch * config_.crossconv_patch;
  std::vector<int64_t> block_widths;
  for (size_t i = 0; i < enc.size(); ++i) {
    const int64_t qi = i == 0 ? c * pp : enc[i - 1], si = i == 0 ? (c + 1) * pp : enc[i - 1];
    encoder_.push_back(
        register_module("encoder" + std::to_string(i), CrossBlock(qi, si, enc[i], true)));
    block_widths.push_back(enc[i]);
  }
  int64_t below = enc.back();
  for (size_t j = 0; j < dec.size(); ++j) {
    const int64_t skip = enc[enc.size() - 2 - j];
    const bool last = j + 1 == dec.size();
    decoder_.push_back(register_module("decoder" + std::to_string(j),
                                       CrossBlock(below + skip, below + skip, dec[j], !last)));
    block_widths.push_back(dec[j]);
    below = dec[j];
  }
  head_ = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(below, pp, 1)));
  if (config_.crossconv_text) {
    const int64_t d = config_.text_dim;
    words_ = register_module(
        "words", torch::nn::Embedding(torch::nn::EmbeddingOptions(config_.text_buckets, d)));
    text_mlp_ = register_module(
        "text_mlp",
        torch::nn::Sequential(torch::nn::Linear(d, d), torch::nn::GELU(), torch::nn::Linear(d, d)));
    for (size_t i = 0; i < block_widths.size(); ++i) {
      auto film =
          register_module("film" + std::to_string(i), torch::nn::Linear(d, 2 * block_widths[i]));
      // Zero-initialised: text starts as a no-op and the network first learns from the examples.
      torch::NoGradGuard no_grad;
      film->weight.zero_();
      film->bias.zero_();
      film_.push_back(film);
    }
    null_support_ = register_parameter("null_support", torch::zeros({c + 1}));
  }
}

void CrossConvNetImpl::require_example(bool has_example) const {
  if (!has_example && config_.needs_examples())
    SEGICL_THROW(UsageError,
                 "this model (UniverSeg architecture without text) needs at least one example", "",
                 "pass --example IMAGE LABEL, or use a model trained with text conditioning");
}

torch::Tensor CrossConvNetImpl::word_ids(const std::vector<std::string>& instructions,
                                         const torch::Device& device) const {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& text : instructions) rows.push_back(hash_words(text, config_.text_buckets));
  return padded_ids(rows, 0, device);  // id 0 is the padding hash_words never yields
}

torch::Tensor CrossConvNetImpl::forward(const torch::Tensor& query,
                                        const torch::Tensor& support_images,
                                        const torch::Tensor& support_masks,
                                        const torch::Tensor& valid, const torch::Tensor& word_ids) {
  const int64_t r = config_.resolution, c = config_.in_channels;
  check_shape(query, {-1, c, r, r}, "query");
  const int64_t b = query.size(0);
  const bool has_support = support_images.defined() && support_images.size(1) > 0;
  torch::Tensor s, v;
  if (has_support) {
    check_shape(support_images, {b, -1, c, r, r}, "support_images");
    check_shape(support_masks, {b, support_images.size(1), 1, r, r}, "support_masks");
    s = torch::cat({support_images, support_masks}, 2);
    v = valid.defined() ? valid.to(torch::kBool)
                        : torch::ones({b, s.size(1)}, torch::kBool).to(query.device());
  }
  torch::Tensor text;
  if (config_.crossconv_text) {
    // The null pair stands in for every episode without a real example (K = 0, all padding).
    // Appended only when some episode needs it, so K >= 1 inference pays nothing for it.
    auto no_example =
        has_support ? ~v.any(1, true) : torch::ones({b, 1}, torch::kBool).to(query.device());
    if (!has_support || no_example.any().item<bool>()) {
      auto null_pair = null_support_.view({1, 1, c + 1, 1, 1}).expand({b, 1, c + 1, r, r});
      s = has_support ? torch::cat({s, null_pair}, 1) : null_pair;
      v = has_support ? torch::cat({v, no_example}, 1) : no_example;
    }
    torch::Tensor embedded = torch::zeros({b, config_.text_dim}, query.options());
    if (word_ids.defined() && word_ids.size(1) > 0) {
      auto ids = word_ids.to(query.device());
      auto present = (ids > 0).to(query.scalar_type()).unsqueeze(2);
      embedded = (words_(ids) * present).sum(1) / present.sum(1).clamp_min(1.0);
    }
    text = text_mlp_->forward(embedded);
  } else {
    require_example(has_support && v.any().item<bool>());
  }
  // Sub-pixel stem: [.., C, R, R] -> [.., C p^2, R/p, R/p].
  const int64_t patch = config_.crossconv_patch;
  torch::Tensor q = query;
  if (patch > 1) {
    q = torch::pixel_unshuffle(query, patch);
    s = torch::pixel_unshuffle(s.flatten(0, 1), patch)
            .view({b, s.size(1), -1, r / patch, r / patch});
  }
  size_t block = 0;
  auto film_of = [&]() -> torch::Tensor {
    return text.defined() ? film_[block++]->forward(text) : torch::Tensor();
  };
  std::vector<torch::Tensor> query_skips, support_skips;
  for (size_t i = 0; i < encoder_.size(); ++i) {
    std::tie(q, s) = encoder_[i]->forward(q, s, v, film_of());
    if (i + 1 < encoder_.size()) {
      query_skips.push_back(q);
      support_skips.push_back(s);
      q = F::max_pool2d(q, F::MaxPool2dFuncOptions(2));
      s = F::max_pool2d(s.flatten(0, 1), F::MaxPool2dFuncOptions(2))
              .view({b, s.size(1), s.size(2), q.size(2), q.size(3)});
    }
  }
  auto up = F::InterpolateFuncOptions()
                .scale_factor(std::vector<double>{2.0, 2.0})
                .mode(torch::kBilinear)
                .align_corners(false);
  for (size_t j = 0; j < decoder_.size(); ++j) {
    const auto& query_skip = query_skips[query_skips.size() - 1 - j];
    const auto& support_skip = support_skips[support_skips.size() - 1 - j];
    q = torch::cat({F::interpolate(q, up), query_skip}, 1);
    auto s_up = F::interpolate(s.flatten(0, 1), up);
    s = torch::cat({s_up.view({b, s.size(1), s.size(2), s_up.size(2), s_up.size(3)}), support_skip},
                   2);
    std::tie(q, s) = decoder_[j]->forward(q, s, v, film_of());
  }
  auto logits = head_(q);
  return patch > 1 ? torch::pixel_shuffle(logits, patch) : logits;
}

}  // namespace segicl::models
