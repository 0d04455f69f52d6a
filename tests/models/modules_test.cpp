// Per-module tests: shapes, LoRA, zero-initialised hint, attention pattern,
// DDIM determinism.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "segicl/core/error.h"
#include "segicl/models/causal_transformer.h"
#include "segicl/models/condition_encoder.h"
#include "segicl/models/latent_denoiser.h"
#include "segicl/models/layers.h"
#include "segicl/models/mask_autoencoder.h"
#include "segicl/models/vision_encoder.h"

namespace segicl::models {
namespace {

ModelConfig tiny() { return load_preset("tiny"); }

torch::Tensor random_masks(int64_t b, int64_t r) {
  return (torch::rand({b, 1, r, r}) > 0.5).to(torch::kFloat32);
}

TEST(ConditionEncoder, MapsMasksToTokensAndPools) {
  torch::manual_seed(0);
  auto c = tiny();
  ConditionEncoder enc(c);
  auto tokens = enc(random_masks(3, c.resolution));
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{3, c.num_condition_tokens, c.cond_dim}));
  EXPECT_EQ(enc->pool(tokens, 4).sizes(), (std::vector<int64_t>{3, 4, c.cond_dim}));
  EXPECT_EQ(enc->pool(tokens, 1).sizes(), (std::vector<int64_t>{3, 1, c.cond_dim}));
  EXPECT_THROW(enc(torch::zeros({3, 1, 16, 16})), ShapeError);
}

TEST(ConditionEncoder, PoolToOneIsTheTokenMean) {
  auto c = tiny();
  ConditionEncoder enc(c);
  auto tokens = torch::randn({2, c.num_condition_tokens, c.cond_dim});
  EXPECT_TRUE(torch::allclose(enc->pool(tokens, 1).squeeze(1), tokens.mean(1), 1e-5, 1e-6));
}

TEST(KeywordEncoder, IsZeroWithoutTextAndNonZeroWithText) {
  auto c = tiny();
  KeywordEncoder enc(c);
  auto ids = torch::tensor({257, 258, 256, 256, 257, 'l', 'i', 258}, torch::kLong).view({2, 4});
  auto out = enc(ids);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, c.cond_dim}));
  EXPECT_EQ(out[0].abs().sum().item<float>(), 0.0f);
  EXPECT_GT(out[1].abs().sum().item<float>(), 0.0f);
}

TEST(MaskAutoencoder, RoundTripShapesAndBoundedLatent) {
  auto c = tiny();
  MaskAutoencoder ae(c);
  auto z = ae->encode(random_masks(2, c.resolution));
  EXPECT_EQ(z.sizes(),
            (std::vector<int64_t>{2, c.latent_channels, c.resolution / 8, c.resolution / 8}));
  EXPECT_LE(z.abs().max().item<float>(), 1.0f);
  EXPECT_EQ(ae->decode(z).sizes(), (std::vector<int64_t>{2, 1, c.resolution, c.resolution}));
}

TEST(NoiseSchedule, IsDecreasingFromNearOneToNearZero) {
  for (const char *kind : {"cosine", "scaled_linear"}) {
    NoiseSchedule s(kind, 1000);
    EXPECT_GT(s.alpha_bar(0), 0.99) << kind;
    EXPECT_LT(s.alpha_bar(999), 0.01) << kind;
    for (int64_t t = 1; t < 1000; ++t) ASSERT_LT(s.alpha_bar(t), s.alpha_bar(t - 1)) << kind;
  }
}

TEST(LatentDenoiser, PredictsNoiseOfLatentShape) {
  auto c = tiny();
  LatentDenoiser den(c);
  const int64_t s = c.resolution / 8;
  auto x = torch::randn({2, c.latent_channels, s, s});
  auto t = torch::tensor({0, 999}, torch::kLong);
  auto cond = torch::randn({2, c.num_condition_tokens, c.cond_dim});
  auto kw = torch::zeros({2, c.cond_dim});
  auto img = torch::rand({2, c.in_channels, c.resolution, c.resolution});
  EXPECT_EQ(den(x, t, cond, kw, img).sizes(), x.sizes());
  EXPECT_EQ(den(x, t, cond, kw).sizes(), x.sizes());
  EXPECT_THROW(den(x, t, cond, kw, torch::rand({2, 2, c.resolution, c.resolution})), ShapeError);
}

TEST(LatentDenoiser, ZeroInitialisedHintEqualsModelWithoutHint) {
  auto c = tiny();
  LatentDenoiser with_hint(c);
  auto c_off = c;
  c_off.use_image_hint = false;
  LatentDenoiser without(c_off);
  {
    torch::NoGradGuard no_grad;
    auto source = with_hint->named_parameters();
    for (auto &item : without->named_parameters()) item.value().copy_(source[item.key()]);
  }
  const int64_t s = c.resolution / 8;
  torch::manual_seed(3);
  auto x = torch::randn({2, c.latent_channels, s, s});
  auto t = torch::tensor({10, 500}, torch::kLong);
  auto cond = torch::randn({2, c.num_condition_tokens, c.cond_dim});
  auto kw = torch::randn({2, c.cond_dim});
  auto img = torch::rand({2, c.in_channels, c.resolution, c.resolution});
  EXPECT_TRUE(torch::equal(with_hint(x, t, cond, kw, img), without(x, t, cond, kw)));
}

TEST(LatentDenoiser, DdimIsDeterministicPerSeed) {
  auto c = tiny();
  LatentDenoiser den(c);
  auto cond = torch::randn({2, c.num_condition_tokens, c.cond_dim});
  auto kw = torch::zeros({2, c.cond_dim});
  auto a = den->ddim_sample(cond, kw, {}, 3, 11);
  auto b = den->ddim_sample(cond, kw, {}, 3, 11);
  auto d = den->ddim_sample(cond, kw, {}, 3, 12);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, d));
  EXPECT_LE(a.abs().max().item<float>(), 1.0f + 1e-5f);
  auto e1 = den->ddim_sample(cond, kw, {}, 3, 11, 1.0);
  auto e2 = den->ddim_sample(cond, kw, {}, 3, 11, 1.0);
  EXPECT_TRUE(torch::equal(e1, e2));
  EXPECT_THROW(den->ddim_sample(cond, kw, {}, 0, 1), UsageError);
}

TEST(VisionEncoder, GivesShortContextAndFullQueryTokens) {
  auto c = tiny();
  VisionEncoder enc(c);
  auto img = torch::rand({3, c.in_channels, c.resolution, c.resolution});
  EXPECT_EQ(enc->encode_context(img).sizes(),
            (std::vector<int64_t>{3, c.tokens_per_example, c.d_model}));
  EXPECT_EQ(enc->encode_query(img).sizes(),
            (std::vector<int64_t>{3, c.num_condition_tokens, c.d_model}));
}

TEST(CausalTransformer, MaskIsCausalWithBidirectionalQueryAndHidesInvalid) {
  auto c = tiny();
  CausalTransformer tr(c);
  auto valid = torch::tensor({1, 1, 0, 1, 1, 1}, torch::kBool).view({1, 6});
  auto m = tr->attention_mask(valid, 4);
  EXPECT_TRUE(m[0][1][0].item<bool>());
  EXPECT_FALSE(m[0][1][3].item<bool>());  // causal
  EXPECT_FALSE(m[0][3][2].item<bool>());  // invalid key hidden
  EXPECT_TRUE(m[0][4][5].item<bool>());   // query sees later query token
  EXPECT_FALSE(m[0][3][4].item<bool>());  // prefix never sees the query
  auto c2 = c;
  c2.query_bidirectional = false;
  CausalTransformer causal(c2);
  EXPECT_FALSE(causal->attention_mask(valid, 4)[0][4][5].item<bool>());
}

TEST(CausalTransformer, PrefixOutputsIgnoreLaterTokensAndInvalidOnes) {
  torch::manual_seed(1);
  auto c = tiny();
  CausalTransformer tr(c);
  tr->eval();
  auto x = torch::randn({1, 6, c.d_model});
  auto valid = torch::tensor({1, 1, 0, 1, 1, 1}, torch::kBool).view({1, 6});
  auto y = tr(x, valid, 4);
  auto x2 = x.clone();
  x2.index_put_({0, 2}, torch::randn({c.d_model}));  // invalid token changes
  x2.index_put_({0, 5}, torch::randn({c.d_model}));  // a later token changes
  auto y2 = tr(x2, valid, 4);
  EXPECT_TRUE(torch::allclose(y.slice(1, 0, 2), y2.slice(1, 0, 2)));
  EXPECT_TRUE(torch::allclose(y[0][3], y2[0][3]));
  EXPECT_FALSE(torch::allclose(y[0][4], y2[0][4]));  // bidirectional query sees position 5
  EXPECT_FALSE(torch::isnan(y).any().item<bool>());
}

TEST(LoRALinear, StartsAsIdentityChangeAndOnlyAdaptersMove) {
  torch::manual_seed(2);
  LoRALinear layer(8, 4);
  auto x = torch::randn({5, 8});
  auto before = layer(x).detach();
  layer->enable_lora(2, 4.0);
  EXPECT_TRUE(torch::allclose(layer(x), before));
  EXPECT_THROW(layer->enable_lora(2, 4.0), UsageError);
  std::vector<torch::Tensor> trainable;
  std::map<std::string, torch::Tensor> snapshot;
  for (auto &item : layer->named_parameters()) {
    snapshot[item.key()] = item.value().detach().clone();
    if (item.value().requires_grad()) trainable.push_back(item.value());
  }
  EXPECT_EQ(trainable.size(), 2u);
  torch::optim::AdamW opt(layer->parameters(), torch::optim::AdamWOptions(1e-2));
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    layer(x).pow(2).sum().backward();
    opt.step();
  }
  for (auto &item : layer->named_parameters()) {
    bool moved = !torch::equal(item.value(), snapshot[item.key()]);
    bool adapter = item.key().find("lora_") == 0;
    EXPECT_EQ(moved, adapter) << item.key();
  }
}

TEST(Projector, MapsHiddenToConditionWidth) {
  auto c = tiny();
  Projector proj(c);
  EXPECT_EQ(proj(torch::randn({2, 7, c.d_model})).sizes(),
            (std::vector<int64_t>{2, 7, c.cond_dim}));
}

}  // namespace
}  // namespace segicl::models
