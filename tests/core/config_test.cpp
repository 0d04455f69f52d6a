#include "segicl/core/config.h"

#include <gtest/gtest.h>

#include "segicl/core/error.h"

namespace segicl::config {

TEST(Config, MergeOverridesKnownKeysRecursively) {
  Json base = {{"model", {{"width", 64}, {"depth", 2}}}, {"seed", 1}};
  merge_strict(base, Json{{"model", {{"width", 128}}}}, "preset.json");
  EXPECT_EQ(base["model"]["width"], 128);
  EXPECT_EQ(base["model"]["depth"], 2);
}

TEST(Config, UnknownKeyIsRejectedWithSuggestion) {
  Json base = {{"learning_rate", 1e-3}};
  try {
    merge_strict(base, Json{{"learning_rat", 1e-4}}, "my.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "my.json");
    EXPECT_NE(e.hint().find("learning_rate"), std::string::npos);
  }
}

TEST(Config, OverrideParsesJsonValuesAndRejectsUnknownPaths) {
  Json base = {{"train", {{"steps", 10}, {"name", "a"}}}};
  apply_override(base, "train.steps=250");
  apply_override(base, "train.name=bob");
  EXPECT_EQ(base["train"]["steps"], 250);
  EXPECT_EQ(base["train"]["name"], "bob");
  EXPECT_THROW(apply_override(base, "train.stepz=1"), ConfigError);
  EXPECT_THROW(apply_override(base, "no_equals_sign"), ConfigError);
}

}  // namespace segicl::config
