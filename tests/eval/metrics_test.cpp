// Known-answer tests for segicl::eval metrics: hand-counted masks, brute-force distance checks.
#include "segicl/eval/metrics.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <random>

#include "segicl/core/error.h"

namespace segicl::eval {
namespace {

// [H, W] bool mask with rows [y0, y0+h) and columns [x0, x0+w) set.
torch::Tensor square(int64_t height, int64_t width, int64_t y0, int64_t x0, int64_t h, int64_t w) {
  auto mask = torch::zeros({height, width}, torch::kBool);
  mask.slice(0, y0, y0 + h).slice(1, x0, x0 + w).fill_(true);
  return mask;
}

// [D, H, W] ball of `radius` mm around voxel `center`, with per-axis spacing in mm.
torch::Tensor ball(int64_t n, std::array<double, 3> center, double radius,
                   std::array<double, 3> spacing = {1, 1, 1}) {
  auto mask = torch::zeros({n, n, n}, torch::kBool);
  auto acc = mask.accessor<bool, 3>();
  for (int64_t z = 0; z < n; ++z)
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x) {
        double dz = (z - center[0]) * spacing[0], dy = (y - center[1]) * spacing[1],
               dx = (x - center[2]) * spacing[2];
        acc[z][y][x] = dz * dz + dy * dy + dx * dx <= radius * radius;
      }
  return mask;
}

TEST(Dice, SquaresOverlappingByHalfScoreOneHalf) {
  // 10x10 squares shifted by 5 columns: |A∩B| = 50, |A| = |B| = 100.
  auto a = square(32, 32, 4, 4, 10, 10);
  auto b = square(32, 32, 4, 9, 10, 10);
  EXPECT_DOUBLE_EQ(dice(a, b), 0.5);
  EXPECT_DOUBLE_EQ(iou(a, b), 50.0 / 150.0);
}

TEST(Dice, IdenticalMasksScoreOne) {
  auto a = square(16, 16, 2, 3, 5, 7);
  EXPECT_DOUBLE_EQ(dice(a, a), 1.0);
  EXPECT_DOUBLE_EQ(iou(a, a), 1.0);
  EXPECT_DOUBLE_EQ(hd95(a, a), 0.0);
}

TEST(Dice, ConcentricSpheresScoreTheirVolumeRatio) {
  auto inner = ball(24, {12, 12, 12}, 5);
  auto outer = ball(24, {12, 12, 12}, 8);
  const double small = inner.sum().item<int64_t>(), large = outer.sum().item<int64_t>();
  ASSERT_GT(small, 0);
  // inner ⊂ outer, so |A∩B| = |inner|; the voxel counts are exact integers.
  EXPECT_DOUBLE_EQ(dice(inner, outer), 2 * small / (small + large));
  EXPECT_DOUBLE_EQ(iou(inner, outer), small / large);
}

TEST(Dice, AcceptsUint8AndProbabilityMasks) {
  auto a = square(8, 8, 0, 0, 4, 4);
  auto probs = a.to(torch::kFloat) * 0.9f + 0.05f;  // 0.95 inside, 0.05 outside
  EXPECT_DOUBLE_EQ(dice(a.to(torch::kUInt8), probs), 1.0);
  auto half = torch::full({8, 8}, 0.5f);  // exactly 0.5 is background
  EXPECT_DOUBLE_EQ(dice(half, torch::zeros({8, 8})), 1.0);
}

TEST(Hd95, SquareShiftedThreePixelsAtTwoMillimetresIsSixMillimetres) {
  // A 20x20 square and its copy 3 columns to the right. Of A's 76 surface pixels, 34 are exactly
  // 3 px from B's surface (the left column, two corners, 14 mid right-column pixels) and none
  // farther; the others are 0-2 px. 3 px is therefore well inside the top 5 %, so the 95th
  // percentile is exactly 3 px = 6 mm, and the same holds from B to A by symmetry.
  auto a = square(40, 40, 10, 10, 20, 20);
  auto b = square(40, 40, 10, 13, 20, 20);
  EXPECT_NEAR(hd95(a, b, {2.0, 2.0}), 6.0, 1e-9);
  // Only the spacing along the shift (columns) matters for these distances.
  EXPECT_NEAR(hd95(a, b, {1.0, 2.0}), 6.0, 1e-9);
  EXPECT_NEAR(hd95(a, b), 3.0, 1e-9);
}

TEST(Hd95, ConcentricSpheresDifferByTheirRadii) {
  // Surfaces of balls of radius 6 and 10 mm are ~4 mm apart; voxelisation moves each surface by
  // under one voxel, so we allow 1 mm (the voxel size along the coarsest axis is 1 mm here).
  auto inner = ball(26, {13, 13, 13}, 6);
  auto outer = ball(26, {13, 13, 13}, 10);
  EXPECT_NEAR(hd95(inner, outer), 4.0, 1.0);
  // Same balls in mm on an anisotropic grid (2 mm slices): still ~4 mm, tolerance one slice.
  std::array<double, 3> spacing{2.0, 1.0, 1.0};
  auto inner_aniso = ball(26, {6, 13, 13}, 6, spacing);
  auto outer_aniso = ball(26, {6, 13, 13}, 10, spacing);
  EXPECT_NEAR(hd95(inner_aniso, outer_aniso, {2.0, 1.0, 1.0}), 4.0, 2.0);
}

TEST(Hd95, DistanceTransformMatchesBruteForceWithAnisotropicSpacing) {
  const std::vector<int64_t> sizes{5, 7, 6};
  const std::vector<double> spacing{2.5, 0.7, 1.3};
  std::mt19937 rng(7);
  std::vector<uint8_t> features(5 * 7 * 6);
  for (auto& f : features) f = rng() % 9 == 0;
  const auto fast = squared_distance_transform(features, sizes, spacing);
  for (int64_t i = 0; i < 210; ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < 210; ++j) {
      if (!features[j]) continue;
      double dz = (i / 42 - j / 42) * spacing[0], dy = ((i / 6) % 7 - (j / 6) % 7) * spacing[1],
             dx = (i % 6 - j % 6) * spacing[2];
      best = std::min(best, dz * dz + dy * dy + dx * dx);
    }
    EXPECT_NEAR(fast[i], best, 1e-9) << "voxel " << i;  // exact up to double rounding
  }
}

TEST(Hd95, NoFeaturesGivesInfiniteDistances) {
  auto d = squared_distance_transform(std::vector<uint8_t>(12, 0), {3, 4}, {1, 1});
  for (double v : d) EXPECT_TRUE(std::isinf(v));
}

TEST(Compare, BothEmptyIsPerfectAndFlagged) {
  auto empty = torch::zeros({6, 6, 6}, torch::kBool);
  Overlap o = compare(empty, empty, {3, 1, 1});
  EXPECT_TRUE(o.both_empty);
  EXPECT_DOUBLE_EQ(o.dice, 1.0);
  EXPECT_DOUBLE_EQ(o.iou, 1.0);
  EXPECT_DOUBLE_EQ(o.hd95, 0.0);
  EXPECT_EQ(o.pred_voxels, 0);
  EXPECT_EQ(o.truth_voxels, 0);
}

TEST(Compare, OneEmptyMaskScoresZeroWithInfiniteDistance) {
  auto empty = torch::zeros({10, 10}, torch::kBool);
  auto some = square(10, 10, 2, 2, 3, 3);
  for (auto [pred, truth] : {std::pair{empty, some}, std::pair{some, empty}}) {
    Overlap o = compare(pred, truth);
    EXPECT_FALSE(o.both_empty);
    EXPECT_DOUBLE_EQ(o.dice, 0.0);
    EXPECT_DOUBLE_EQ(o.iou, 0.0);
    EXPECT_TRUE(std::isinf(o.hd95) && o.hd95 > 0);
  }
  EXPECT_EQ(compare(some, empty).pred_voxels, 9);
}

TEST(Compare, AgreesWithTheSingleMetrics) {
  auto a = square(40, 40, 10, 10, 20, 20);
  auto b = square(40, 40, 12, 13, 20, 18);
  Overlap o = compare(a, b, {2.0, 0.5});
  EXPECT_DOUBLE_EQ(o.dice, dice(a, b));
  EXPECT_DOUBLE_EQ(o.iou, iou(a, b));
  EXPECT_DOUBLE_EQ(o.hd95, hd95(a, b, {2.0, 0.5}));
  EXPECT_EQ(o.pred_voxels, 400);
  EXPECT_EQ(o.truth_voxels, 360);
}

TEST(Compare, ShapeMismatchIsShapeErrorNamingBothShapes) {
  try {
    compare(torch::zeros({4, 5}), torch::zeros({4, 6}));
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(e.message().find("[4, 5]"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("[4, 6]"), std::string::npos) << e.message();
  }
  EXPECT_THROW(dice(torch::zeros({4}), torch::zeros({4})), ShapeError);
  EXPECT_THROW(hd95(torch::zeros({4, 4}), torch::zeros({4, 4}), {1.0, 1.0, 1.0}), ShapeError);
}

TEST(SliceScores, CountOnlyThePlanesOfTheStructuresExtentAcrossTheGivenAxis) {
  // [D=4, H=10, W=6], sliced across H (axis 1). Truth: a 2x2 block (d 1-2, w 1-2) on planes h = 3,
  // 4, 5 (12 voxels). Prediction: the block on h = 3 and 5, only d = 1 of it on h = 4 (2 of 4), and
  // 4 false-positive voxels on plane h = 0, outside the extent.
  auto truth = torch::zeros({4, 10, 6}, torch::kBool);
  truth.slice(0, 1, 3).slice(1, 3, 6).slice(2, 1, 3).fill_(true);
  auto pred = truth.clone();
  pred.select(1, 4).select(0, 2).fill_(false);
  pred.select(1, 0).slice(0, 0, 2).slice(1, 0, 2).fill_(true);
  ASSERT_EQ(pred.sum().item<int64_t>(), 14);

  const auto scores = slice_scores(pred, truth, 1);
  EXPECT_EQ(scores.slices_with_truth, 3);
  // Planes 3-5: |A| = 10, |B| = 12, |A∩B| = 10; the whole volume would give 20 / 26.
  EXPECT_DOUBLE_EQ(scores.dice_in_extent, 20.0 / 22.0);
  EXPECT_DOUBLE_EQ(dice(pred, truth), 20.0 / 26.0);
  // Per plane: 1, 2·2 / (2 + 4), 1.
  EXPECT_DOUBLE_EQ(scores.mean_slice_dice, (1.0 + 2.0 / 3.0 + 1.0) / 3.0);
  // Across D the extent is planes 1-2, which hold every voxel of the prediction but the 2 on d = 0.
  EXPECT_DOUBLE_EQ(slice_scores(pred, truth, 0).dice_in_extent, 2.0 * 10 / (12 + 12));
}

TEST(SliceScores, EmptyTruthGivesNaNAndA2DMaskIsOnePlane) {
  auto empty = torch::zeros({3, 4, 4}, torch::kBool);
  auto some = empty.clone();
  some[1][2][2] = true;
  const auto none = slice_scores(some, empty, 0);
  EXPECT_EQ(none.slices_with_truth, 0);
  EXPECT_TRUE(std::isnan(none.dice_in_extent));
  EXPECT_TRUE(std::isnan(none.mean_slice_dice));

  auto a = square(32, 32, 4, 4, 10, 10);
  auto b = square(32, 32, 4, 9, 10, 10);
  const auto planar = slice_scores(a, b, 0);
  EXPECT_EQ(planar.slices_with_truth, 1);
  EXPECT_DOUBLE_EQ(planar.dice_in_extent, 0.5);
  EXPECT_DOUBLE_EQ(planar.mean_slice_dice, 0.5);
  EXPECT_THROW(slice_scores(some, empty, 3), ShapeError);
  EXPECT_THROW(slice_scores(a, b, 1), ShapeError);
}

}  // namespace
}  // namespace segicl::eval
