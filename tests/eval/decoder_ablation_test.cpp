// Decoder ablation (eval/decoder_ablation.h) on a random-weight tiny paper-architecture model and
// the trainer tests' toy pack: one row per (hint, steps), repeatable, refused where it cannot run.
#include "segicl/eval/decoder_ablation.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "segicl/core/error.h"
#include "segicl/models/config.h"
#include "../train/toy_pack.h"

namespace segicl::eval {
namespace {
namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("segicl_decoder_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

models::SegICLModel tiny_model(bool hint = true) {
  auto config = models::load_preset("tiny");
  config.use_image_hint = hint;
  torch::manual_seed(3);
  return models::SegICLModel(config);
}

TEST(DecoderAblation, OneRowPerHintAndStepCountOnTheSameSlicesAndNoise) {
  auto dir = scratch("rows");
  auto pack = data::Pack::open(train::testing::write_toy_pack(dir, 32));
  auto model = tiny_model();
  DecoderAblationOptions o;
  o.ddim_steps = {1, 3};
  o.slices = 5;
  o.batch = 2;  // batches of 2, 2, 1: the last one is short
  auto first = run_decoder_ablation(*model, *pack, o);
  ASSERT_EQ(first.rows.size(), 4u);
  EXPECT_TRUE(first.rows[0].hint);
  EXPECT_EQ(first.rows[1].ddim_steps, 3);
  EXPECT_FALSE(first.rows[2].hint);
  EXPECT_EQ(first.options["slices"].get<int64_t>(), 5);
  for (const auto& r : first.rows) {
    EXPECT_GE(r.dice_mean, 0.0);
    EXPECT_LE(r.dice_mean, 1.0);
    EXPECT_GT(r.ms_per_slice, 0.0);
  }
  auto again = run_decoder_ablation(*model, *pack, o);
  for (size_t i = 0; i < first.rows.size(); ++i) EXPECT_DOUBLE_EQ(again.rows[i].dice_mean, first.rows[i].dice_mean);
  auto md = write_decoder_report(first, (dir / "report").string());
  EXPECT_NE(md.find("| 3 | off |"), std::string::npos) << md;
  // A random-init hint branch is zero-initialised: on and off decode alike, a paired difference of 0.
  EXPECT_EQ(first.rows[0].dices.size(), 5u);
  EXPECT_NE(md.find("| 1 | +0.00 ± 0.00 |"), std::string::npos) << md;
  EXPECT_TRUE(fs::exists(dir / "report" / "metrics.json"));
  fs::remove_all(dir);
}

TEST(DecoderAblation, RefusesWhatItCannotMeasure) {
  auto dir = scratch("refuse");
  fs::create_directories(dir / "32");
  fs::create_directories(dir / "48");
  auto pack32 = data::Pack::open(train::testing::write_toy_pack(dir / "32", 32));
  auto pack48 = data::Pack::open(train::testing::write_toy_pack(dir / "48", 48));
  DecoderAblationOptions o;
  o.slices = 2;
  auto model = tiny_model();
  EXPECT_THROW(run_decoder_ablation(*model, *pack48, o), UsageError) << "pack at another resolution";
  auto no_hint = tiny_model(false);
  EXPECT_THROW(run_decoder_ablation(*no_hint, *pack32, o), UsageError) << "hint asked of a model without one";
  o.hints = {false};
  EXPECT_NO_THROW(run_decoder_ablation(*no_hint, *pack32, o));
  models::SegICLModel crossconv(models::load_preset("crossconv-tiny"));
  EXPECT_THROW(run_decoder_ablation(*crossconv, *pack32, o), UsageError) << "no decoder to ablate";
  o.ddim_steps = {0};
  EXPECT_THROW(run_decoder_ablation(*model, *pack32, o), UsageError);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace segicl::eval
