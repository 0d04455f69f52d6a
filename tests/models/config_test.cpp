// ModelConfig: JSON round trip, strict keys, presets, analytic parameter counts
// vs real modules.
#include "segicl/models/config.h"

#include <gtest/gtest.h>

#include "segicl/core/error.h"
#include "segicl/models/segicl_model.h"

namespace segicl::models {
namespace {

int64_t real_count(const ModelConfig &c) {
  SegICLModel model(c);
  int64_t n = 0;
  for (const auto &p : model->parameters()) n += p.numel();
  return n;
}

TEST(ModelConfig, JsonRoundTripPreservesEveryField) {
  ModelConfig c;
  c.resolution = 64;
  c.unet_channel_mult = {1, 3};
  c.noise_schedule = "scaled_linear";
  c.query_bidirectional = false;
  c.lora_alpha = 7.5;
  c.prediction = "epsilon";
  auto back = ModelConfig::from_json(c.to_json(), "test");
  EXPECT_EQ(back.to_json(), c.to_json());
}

TEST(ModelConfig, UnknownKeyIsConfigErrorWithSuggestion) {
  try {
    ModelConfig::from_json(config::Json{{"resolutoin", 64}}, "preset.json");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError &e) {
    EXPECT_EQ(e.file(), "preset.json");
    EXPECT_NE(e.hint().find("resolution"), std::string::npos);
  }
}

TEST(ModelConfig, InconsistentSizesAreConfigErrors) {
  EXPECT_THROW(ModelConfig::from_json(config::Json{{"num_condition_tokens", 60}}, "x"),
               ConfigError);
  EXPECT_THROW(ModelConfig::from_json(config::Json{{"resolution", 100}}, "x"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json(config::Json{{"noise_schedule", "linear"}}, "x"),
               ConfigError);
  EXPECT_THROW(ModelConfig::from_json(config::Json{{"resolution", "big"}}, "x"), ConfigError);
}

TEST(ModelConfig, AllPresetsLoadAndValidate) {
  for (const char *name : {"tiny", "cpu", "gpu", "paper"}) {
    ModelConfig c = load_preset(name);
    EXPECT_GT(count_parameters(c), 0) << name;
    EXPECT_GT(flops_per_query(c, 3, 4), 0) << name;
    EXPECT_GE(c.max_context(), 8) << name;
  }
  EXPECT_EQ(load_preset("tiny").resolution, 32);
  EXPECT_EQ(load_preset(std::string(SEGICL_SOURCE_DIR) + "/configs/model/cpu.json").resolution,
            128);
  EXPECT_THROW(load_preset("no-such-preset"), ConfigError);
}

TEST(ModelConfig, CpuPresetEqualsCodeDefaults) {
  EXPECT_EQ(load_preset("cpu").to_json(), ModelConfig{}.to_json());
}

TEST(ModelConfig, PaperPresetIsSevenBillionScale) {
  int64_t n = count_parameters(load_preset("paper"));
  EXPECT_GT(n, 6'000'000'000);
  EXPECT_LT(n, 9'000'000'000);
}

TEST(CountParameters, MatchesRealModuleForTiny) {
  ModelConfig c = load_preset("tiny");
  EXPECT_EQ(count_parameters(c), real_count(c));
}

TEST(CountParameters, MatchesRealModuleForCpu) {
  ModelConfig c = load_preset("cpu");
  EXPECT_EQ(count_parameters(c), real_count(c));
}

TEST(CountParameters, MatchesRealModuleForCrossconvPresets) {
  for (const char *name : {"universeg", "crossconv-cpu", "crossconv-tiny"}) {
    auto c = load_preset(name);
    EXPECT_TRUE(c.is_crossconv()) << name;
    EXPECT_EQ(count_parameters(c), real_count(c)) << name;
  }
  auto c = load_preset("crossconv-tiny");
  c.crossconv_patch = 2;
  c.crossconv_text = false;
  c.crossconv_encoder = {8, 12, 16};
  c.crossconv_decoder = {12, 8};
  EXPECT_EQ(count_parameters(c), real_count(c));
}

TEST(ModelConfig, CrossconvSizesAreChecked) {
  auto c = load_preset("crossconv-tiny");
  c.crossconv_decoder = {16};  // must be one level fewer than the encoder
  EXPECT_THROW(c.validate("test"), ConfigError);
  c = load_preset("crossconv-tiny");
  c.crossconv_patch = 3;  // 64 / 3 is not an integer grid
  EXPECT_THROW(c.validate("test"), ConfigError);
  c = load_preset("crossconv-tiny");
  c.architecture = "unet";
  EXPECT_THROW(c.validate("test"), ConfigError);
}

TEST(CountParameters, MatchesRealModuleWithoutHintOrSpatialAndMoreBlocks) {
  ModelConfig c = load_preset("tiny");
  c.use_image_hint = false;
  c.cond_spatial_injection = false;
  c.unet_res_blocks = 2;
  c.unet_channel_mult = {1, 2, 1};
  c.resolution = 64;
  EXPECT_EQ(count_parameters(c), real_count(c));
}

TEST(ModelConfig, FloatForAnIntegerKeyIsConfigError) {
  // A checkpoint's config is untrusted: get<int64_t>() of 1e300 was undefined behaviour.
  EXPECT_THROW(ModelConfig::from_json({{"resolution", 1e300}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"crossconv_encoder", {16, 1.5, 16}}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"d_model", "64"}}, "ckpt"), ConfigError);
  EXPECT_NO_THROW(ModelConfig::from_json({{"lora_alpha", 16}}, "ckpt"));  // a float key takes an int
}

TEST(ModelConfig, ZeroHeadsOrOutOfRangeSizesAreConfigErrorsNotUndefinedBehaviour) {
  // fuzz_checkpoint: a checkpoint whose config said vision_heads 0 divided by zero in validate().
  // Every size is bounded before the checks divide, shift or multiply by it.
  for (const char* key : {"vision_heads", "unet_heads", "num_heads"})
    EXPECT_THROW(ModelConfig::from_json({{key, 0}}, "ckpt"), ConfigError) << key;
  EXPECT_THROW(ModelConfig::from_json({{"unet_channel_mult", std::vector<int64_t>(40, 1)}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"unet_channel_mult", {1, int64_t{1} << 40}}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"crossconv_encoder", std::vector<int64_t>(70, 8)}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"cond_dim", int64_t{1} << 40}}, "ckpt"), ConfigError);
  EXPECT_THROW(ModelConfig::from_json({{"d_model", -192}}, "ckpt"), ConfigError);
  for (const char* preset : {"tiny", "cpu", "gpu", "paper", "crossconv-tiny", "crossconv-cpu", "universeg"})
    EXPECT_NO_THROW(load_preset(preset)) << preset;
}

}  // namespace
}  // namespace segicl::models
