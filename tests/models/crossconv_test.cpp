// The crossconv architecture (UniverSeg CrossBlocks + text FiLM): shapes, K = 0 rules, padding
// invariance, flip-averaged samples, word hashing, one-stage training and save/load.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "segicl/core/error.h"
#include "segicl/models/checkpoint.h"
#include "segicl/models/segicl_model.h"

namespace segicl::models {
namespace {

data::EpisodeBatch random_batch(const ModelConfig &c, int64_t b, int64_t k) {
  const int64_t r = c.resolution;
  data::EpisodeBatch batch;
  batch.query_images = torch::rand({b, c.in_channels, r, r});
  batch.query_masks = (torch::rand({b, 1, r, r}) > 0.7).to(torch::kFloat32);
  batch.context_images = torch::rand({b, k, c.in_channels, r, r});
  batch.context_masks = (torch::rand({b, k, 1, r, r}) > 0.7).to(torch::kFloat32);
  batch.context_valid = torch::ones({b, k}, torch::kBool);
  batch.instructions.assign(static_cast<size_t>(b), "segment the liver");
  return batch;
}

TEST(HashWords, CaseAndPunctuationInsensitiveAndNeverPadding) {
  EXPECT_EQ(hash_words("Segment the LIVER!", 512), hash_words("segment the liver", 512));
  EXPECT_TRUE(hash_words("", 512).empty());
  EXPECT_TRUE(hash_words("  ,;  ", 512).empty());
  auto ids = hash_words("left kidney", 512);
  ASSERT_EQ(ids.size(), 2u);
  for (auto id : ids) EXPECT_TRUE(id >= 1 && id < 512);
  EXPECT_NE(hash_words("liver", 4096), hash_words("spleen", 4096));
}

TEST(CrossConv, KZeroNeedsTextConditioning) {
  torch::manual_seed(0);
  auto c = load_preset("crossconv-tiny");
  SegICLModel with_text(c);
  auto context = with_text->encode_context({}, {}, "segment the spleen");
  auto p = with_text->segment(context, torch::rand({2, 1, c.resolution, c.resolution})).probability;
  EXPECT_EQ(p.sizes(), (std::vector<int64_t>{2, 1, c.resolution, c.resolution}));
  c.crossconv_text = false;
  SegICLModel without_text(c);
  EXPECT_THROW(without_text->encode_context({}, {}, "segment the spleen"), UsageError);
}

TEST(CrossConv, PaddingPairsDoNotChangeTheLogits) {
  torch::manual_seed(1);
  auto c = load_preset("crossconv-tiny");
  SegICLModel model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  auto batch = random_batch(c, 1, 2);
  auto ids = model->crossconv->word_ids(batch.instructions, torch::kCPU);
  auto two = model->crossconv(batch.query_images, batch.context_images, batch.context_masks, batch.context_valid, ids);
  // A third pair of noise marked invalid must weigh nothing.
  auto images = torch::cat({batch.context_images, torch::rand({1, 1, 1, c.resolution, c.resolution})}, 1);
  auto masks = torch::cat({batch.context_masks, torch::ones({1, 1, 1, c.resolution, c.resolution})}, 1);
  auto valid = torch::tensor({true, true, false}).view({1, 3});
  auto padded = model->crossconv(batch.query_images, images, masks, valid, ids);
  EXPECT_TRUE(torch::allclose(two, padded, 1e-5, 1e-6));
}

TEST(CrossConv, LossTrainsEveryParameterInOneStageOnly) {
  torch::manual_seed(2);
  auto c = load_preset("crossconv-tiny");
  SegICLModel model(c);
  EXPECT_THROW(model->set_stage(2), UsageError);
  model->set_stage(1);
  auto batch = random_batch(c, 2, 3);
  batch.context_valid[1].fill_(false);  // the second episode has no example: the null pair runs
  // The FiLM output layers start at zero, so the text path only receives gradient after one step.
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1));
  torch::Tensor loss;
  for (int step = 0; step < 2; ++step) {
    sgd.zero_grad();
    loss = model->crossconv_loss(batch);
    ASSERT_TRUE(std::isfinite(loss.item<double>()));
    loss.backward();
    if (step == 0) sgd.step();
  }
  int64_t with_grad = 0, total = 0;
  for (auto &p : model->parameters()) {
    ++total;
    if (p.grad().defined() && p.grad().abs().sum().item<double>() > 0) ++with_grad;
  }
  EXPECT_GE(with_grad, total - 1);
  EXPECT_THROW(model->stage2_loss(batch), UsageError);
  EXPECT_THROW(model->stage1_loss(batch.query_masks, batch.query_images, {}), UsageError);
}

TEST(CrossConv, FlipSamplesGiveProbabilityAndNonNegativeVariance) {
  torch::manual_seed(3);
  auto c = load_preset("crossconv-tiny");
  SegICLModel model(c);
  model->eval();
  auto batch = random_batch(c, 1, 2);
  auto context = model->encode_context(batch.context_images[0], batch.context_masks[0], "");
  SegmentOptions one, four;
  four.num_samples = 4;
  auto p1 = model->segment(context, batch.query_images, one);
  auto p4 = model->segment(context, batch.query_images, four);
  EXPECT_EQ(p1.variance.abs().max().item<float>(), 0.0f);
  EXPECT_GE(p4.variance.min().item<float>(), 0.0f);
  EXPECT_GT(p4.variance.max().item<float>(), 0.0f);  // random weights are not flip-equivariant
  EXPECT_GE(p4.probability.min().item<float>(), 0.0f);
  EXPECT_LE(p4.probability.max().item<float>(), 1.0f);
}

TEST(CrossConv, SaveLoadGivesIdenticalSegmentation) {
  torch::manual_seed(4);
  auto c = load_preset("crossconv-tiny");
  SegICLModel model(c);
  model->eval();
  auto file = (std::filesystem::temp_directory_path() / "segicl_crossconv_test.pt").string();
  save_checkpoint(file, *model, config::Json::object());
  auto loaded = load_checkpoint(file);
  loaded.model->eval();
  EXPECT_TRUE(loaded.model->config().is_crossconv());
  auto batch = random_batch(c, 1, 3);
  auto a = model->encode_context(batch.context_images[0], batch.context_masks[0], "segment the liver");
  auto b = loaded.model->encode_context(batch.context_images[0], batch.context_masks[0], "segment the liver");
  EXPECT_TRUE(torch::equal(model->segment(a, batch.query_images).probability,
                           loaded.model->segment(b, batch.query_images).probability));
  std::filesystem::remove(file);
}

// `segicl model interpolate`: t = 0 is A, t = 1 is B, between them every weight is the exact
// mix; a model of another architecture is refused, naming its file.
TEST(Checkpoint, InterpolatedWeightsAreTheMixOfTheTwoModels) {
  auto c = load_preset("crossconv-tiny");
  torch::manual_seed(1);
  SegICLModel a(c), mixed(c);
  torch::manual_seed(2);
  SegICLModel b(c);
  auto copy_of = [](SegICLModel& from, SegICLModel& to) {
    torch::NoGradGuard no_grad;
    auto source = from->parameters(), target = to->parameters();
    for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
  };
  for (double t : {0.0, 0.25, 1.0}) {
    copy_of(a, mixed);
    interpolate_weights(*mixed, *b, t, "a.pt", "b.pt");
    auto pa = a->parameters(), pb = b->parameters(), pm = mixed->parameters();
    for (size_t i = 0; i < pm.size(); ++i)
      ASSERT_TRUE(torch::allclose(pm[i], (1 - t) * pa[i] + t * pb[i], 1e-6, 1e-7)) << "t " << t << " tensor " << i;
  }
  size_t differing = 0;  // some weights start equal (norm scales, zero-initialised heads)
  for (size_t i = 0; i < a->parameters().size(); ++i) differing += !torch::equal(a->parameters()[i], b->parameters()[i]);
  EXPECT_GT(differing, a->parameters().size() / 2) << "the two inits must differ";
  SegICLModel other(load_preset("tiny"));
  try {
    interpolate_weights(*a, *other, 0.5, "a.pt", "other.pt");
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_EQ(e.file(), "other.pt");
  }
}

// ---- Findings of fuzz/fuzz_checkpoint.cpp (inputs in fuzz/regressions/) ----

// The inputs keep the CRC-32s that fuzz_checkpoint repairs before loading, so each reaches the
// check it is about, not the CRC check. `what`: a fragment of the expected message.
void expect_format_error(const std::string& file, const std::string& what = "") {
  try {
    load_checkpoint(file);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_NE(e.message().find(what), std::string::npos) << e.message();
    EXPECT_EQ(e.message().find("CRC-32"), std::string::npos) << e.message();
  }
}

TEST(Checkpoint, ArchiveThatMakesTorchThrowOutOfRangeIsAFormatError) {
  // LibTorch's unpickler threw std::out_of_range on this file (valid zip CRCs, broken pickle);
  // only c10::Error was translated, so it escaped untyped.
  expect_format_error(std::string(SEGICL_SOURCE_DIR) + "/fuzz/regressions/checkpoint-pickle-out-of-range.pt");
}

TEST(Checkpoint, MetaOfTheWrongShapeIsAFormatError) {
  // nlohmann's value() threw an untyped type_error for a meta that is not an object or whose
  // format_version is not a number.
  const auto file = (std::filesystem::temp_directory_path() / "segicl_meta_test.pt").string();
  for (const std::string meta : {"[1, 2]", R"({"format": "segicl-checkpoint", "format_version": "1"})",
                                 R"({"format": 7})"}) {
    SCOPED_TRACE(meta);
    torch::serialize::OutputArchive archive;
    archive.write("meta", c10::IValue(meta));
    archive.save_to(file);
    expect_format_error(file);
  }
  std::filesystem::remove(file);
}

TEST(Checkpoint, ArchiveWithABadVersionRecordIsAFormatErrorBeforeTorchOpensIt) {
  // A version record of "\x1b\n" made LibTorch's reader throw std::invalid_argument from its
  // constructor, leaking its zip state (LeakSanitizer); now refused before LibTorch sees it.
  expect_format_error(std::string(SEGICL_SOURCE_DIR) +
                      "/fuzz/regressions/checkpoint-bad-version-record-torch-leaks.pt",
                      "unreadable version record");
}

TEST(Checkpoint, CorruptPicklesLibTorchWouldCrashOnAreFormatErrors) {
  // fuzz_checkpoint's open LibTorch 1.13 findings: a free of a non-heap address while importing
  // the module, a 13.5 GB and an 18.6 GB allocation from pickle fields, a tensor whose geometry
  // reaches past its storage (null read when copied), and zip entries LibTorch's reader fails on
  // inside its constructor, leaking its state (LeakSanitizer). All now refused before LibTorch.
  const std::pair<const char*, const char*> cases[] = {
      {"checkpoint-torch-bad-free.pt", "not a valid pickle"},
      {"checkpoint-pickle-asks-13gb.pt", "not a valid pickle"},
      {"checkpoint-torch-oom-3.pt", "not a valid pickle"},
      {"checkpoint-torch-crash-2.pt", "reaches past its stored data"},
      {"checkpoint-encrypted-flag-torch-leaks.pt", "encrypted or patched"},
      {"checkpoint-directory-attribute-torch-leaks.pt", "marked as a directory"},
      // Not LibTorch's: our config check divided by its vision_heads of 0 (UBSan, fuzz_checkpoint).
      {"checkpoint-config-zero-heads-divides-by-zero.pt", "head counts must be positive"}};
  for (const auto& [name, what] : cases) {
    SCOPED_TRACE(name);
    expect_format_error(std::string(SEGICL_SOURCE_DIR) + "/fuzz/regressions/" + name, what);
  }
}

TEST(Checkpoint, DamagedCompressedCodeRecordIsRefusedBeforeTorchScriptCompilesIt) {
  // LibTorch's miniz skips CRC checks, so a damaged deflated code/__torch__.py reached the
  // TorchScript compiler, which crashed (SEGV in ScriptTypeParser::parseClassConstant;
  // fuzz_checkpoint's 10-minute run). Compressed records are now CRC-checked too.
  const std::string file =
      std::string(SEGICL_SOURCE_DIR) + "/fuzz/regressions/checkpoint-damaged-code-crashes-torchscript.pt";
  try {
    load_checkpoint(file);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_NE(e.message().find("code/__torch__.py' fails its CRC-32 check"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace segicl::models
