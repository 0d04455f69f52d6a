// SegICLModel: losses, stages, LoRA, inference API, determinism and save/load.
#include "segicl/models/segicl_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "segicl/core/error.h"

namespace segicl::models {
namespace {

ModelConfig tiny() { return load_preset("tiny"); }

data::EpisodeBatch make_batch(const ModelConfig &c, int64_t b, int64_t k) {
  data::EpisodeBatch batch;
  const int64_t r = c.resolution;
  batch.query_images = torch::rand({b, c.in_channels, r, r});
  batch.query_masks = (torch::rand({b, 1, r, r}) > 0.5).to(torch::kFloat32);
  batch.context_images = torch::rand({b, k, c.in_channels, r, r});
  batch.context_masks = (torch::rand({b, k, 1, r, r}) > 0.5).to(torch::kFloat32);
  batch.context_valid = torch::ones({b, k}, torch::kBool);
  for (int64_t i = 0; i < b; ++i) batch.instructions.push_back(i % 2 ? "segment the liver" : "");
  return batch;
}

TEST(SegICLModel, Stage1LossHasFiniteTermsAndTrainsOnlyStage1) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->set_stage(1);
  auto masks = (torch::rand({2, 1, c.resolution, c.resolution}) > 0.5).to(torch::kFloat32);
  auto images = torch::rand({2, c.in_channels, c.resolution, c.resolution});
  auto losses = model->stage1_loss(masks, images, {"liver", ""});
  EXPECT_TRUE(torch::isfinite(losses.total).item<bool>());
  EXPECT_GT(losses.reconstruction.item<float>(), 0);
  EXPECT_GT(losses.diffusion.item<float>(), 0);
  losses.total.backward();
  for (auto &item : model->named_parameters()) {
    bool stage1 = item.key().rfind("vision_encoder", 0) != 0 &&
                  item.key().rfind("transformer", 0) != 0 && item.key().rfind("projector", 0) != 0;
    EXPECT_EQ(item.value().requires_grad(), stage1) << item.key();
  }
  EXPECT_THROW(model->stage1_loss(masks, images, {"only one"}), ShapeError);
  EXPECT_THROW(model->set_stage(3), UsageError);
}

TEST(SegICLModel, Stage2LossBackpropagatesToEncoderButNotTeacher) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->set_stage(2);
  auto batch = make_batch(c, 2, 3);
  batch.context_valid[1][2] = false;
  auto loss = model->stage2_loss(batch);
  EXPECT_TRUE(torch::isfinite(loss).item<bool>());
  loss.backward();
  EXPECT_TRUE(model->projector->parameters()[0].grad().defined());
  EXPECT_TRUE(model->vision_encoder->parameters()[0].grad().defined());
  for (auto &p : model->condition_encoder->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(SegICLModel, PaddedContextPairsDoNotChangeThePrediction) {
  torch::manual_seed(4);
  auto c = tiny();
  SegICLModel model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  auto batch = make_batch(c, 1, 3);
  batch.context_valid[0][2] = false;
  auto a = model->forward_condition(batch);
  batch.context_images[0][2].uniform_();
  batch.context_masks[0][2].fill_(1.0);
  auto b = model->forward_condition(batch);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6));
}

TEST(SegICLModel, LoraStage2TrainsOnlyAdaptersInTheTransformer) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->enable_lora(4, 8.0);
  model->set_stage(2);
  std::map<std::string, torch::Tensor> before;
  for (auto &item : model->named_parameters()) before[item.key()] = item.value().detach().clone();
  torch::optim::AdamW opt(model->parameters_for_stage(2), torch::optim::AdamWOptions(1e-2));
  auto batch = make_batch(c, 2, 2);
  for (int i = 0; i < 2; ++i) {
    opt.zero_grad();
    model->stage2_loss(batch).backward();
    opt.step();
  }
  for (auto &item : model->named_parameters()) {
    const auto &key = item.key();
    bool moved = !torch::equal(item.value(), before[key]);
    if (key.rfind("transformer.blocks", 0) == 0 && key.find("base.") != std::string::npos) {
      EXPECT_FALSE(moved) << key;
    }
    if (key.find("lora_b") != std::string::npos) EXPECT_TRUE(moved) << key;
    if (key.rfind("denoiser", 0) == 0 || key.rfind("condition_encoder", 0) == 0)
      EXPECT_FALSE(moved) << key;
  }
}

TEST(SegICLModel, SegmentShapesForKZeroEmptyTextAndSeveralSamples) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->eval();
  const int64_t r = c.resolution;
  auto query = torch::rand({2, c.in_channels, r, r});
  for (int64_t k : {0, 3}) {
    for (const char *text : {"", "segment the kidney"}) {
      auto ctx = model->encode_context(torch::rand({k, c.in_channels, r, r}),
                                       (torch::rand({k, 1, r, r}) > 0.5).to(torch::kFloat32), text);
      EXPECT_EQ(ctx.num_context, k);
      SegmentOptions opt;
      opt.ddim_steps = 2;
      opt.num_samples = 3;
      auto pred = model->segment(ctx, query, opt);
      EXPECT_EQ(pred.probability.sizes(), (std::vector<int64_t>{2, 1, r, r}));
      EXPECT_EQ(pred.variance.sizes(), (std::vector<int64_t>{2, 1, r, r}));
      EXPECT_EQ(pred.tokens.sizes(), (std::vector<int64_t>{2, c.num_condition_tokens, c.cond_dim}));
      EXPECT_GE(pred.probability.min().item<float>(), 0.0f);
      EXPECT_LE(pred.probability.max().item<float>(), 1.0f);
      EXPECT_FALSE(pred.probability.requires_grad());
    }
  }
  auto none = model->encode_context({}, {}, "");
  EXPECT_EQ(none.num_context, 0);
}

TEST(SegICLModel, TooManyContextPairsIsUsageError) {
  auto c = tiny();
  SegICLModel model(c);
  const int64_t k = c.max_context() + 1, r = c.resolution;
  const std::string longest(100, 'x');  // truncated to max_text_tokens
  EXPECT_THROW(
      model->encode_context(torch::rand({k, 1, r, r}), torch::zeros({k, 1, r, r}), longest),
      UsageError);
  EXPECT_NO_THROW(model->encode_context(torch::rand({k - 1, 1, r, r}),
                                        torch::zeros({k - 1, 1, r, r}), longest));
}

TEST(SegICLModel, SameSeedSameSamplesDifferentSeedDifferent) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->eval();
  const int64_t r = c.resolution;
  auto ctx = model->encode_context(torch::rand({2, 1, r, r}), torch::ones({2, 1, r, r}), "liver");
  auto query = torch::rand({1, 1, r, r});
  SegmentOptions opt;
  opt.ddim_steps = 3;
  opt.seed = 5;
  auto a = model->segment(ctx, query, opt).probability;
  auto b = model->segment(ctx, query, opt).probability;
  opt.seed = 6;
  auto d = model->segment(ctx, query, opt).probability;
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, d));
}

TEST(SegICLModel, SaveLoadGivesBitIdenticalSegmentation) {
  torch::manual_seed(0);
  auto c = tiny();
  SegICLModel model(c);
  model->eval();
  auto path = (std::filesystem::temp_directory_path() /
               ("segicl_model_test_" + std::to_string(::getpid()) + ".pt"))
                  .string();
  torch::save(model, path);
  torch::manual_seed(99);
  SegICLModel loaded(c);
  torch::load(loaded, path);
  loaded->eval();
  std::filesystem::remove(path);
  const int64_t r = c.resolution;
  auto images = torch::rand({3, 1, r, r});
  auto masks = (torch::rand({3, 1, r, r}) > 0.5).to(torch::kFloat32);
  auto query = torch::rand({2, 1, r, r});
  SegmentOptions opt;
  opt.ddim_steps = 3;
  opt.num_samples = 2;
  auto a = model->segment(model->encode_context(images, masks, "spleen"), query, opt);
  auto b = loaded->segment(loaded->encode_context(images, masks, "spleen"), query, opt);
  EXPECT_TRUE(torch::equal(a.probability, b.probability));
  EXPECT_TRUE(torch::equal(a.variance, b.variance));
}

}  // namespace
}  // namespace segicl::models
