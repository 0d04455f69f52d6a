#include "segicl/data/preprocess.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "segicl/core/error.h"

namespace segicl::data {

namespace {

io::Volume make_volume(int64_t x, int64_t y, int64_t z, std::array<double, 3> spacing, std::array<double, 9> direction) {
  io::Volume v;
  v.size = {x, y, z};
  v.geometry.spacing = spacing;
  v.geometry.direction = direction;
  v.voxels.resize(x * y * z);
  for (size_t i = 0; i < v.voxels.size(); ++i) v.voxels[i] = static_cast<float>((i * 7919) % 1000);
  return v;
}

io::LabelMap ball_labels(const io::Volume& v) {
  io::LabelMap l;
  l.size = v.size;
  l.geometry = v.geometry;
  l.labels.resize(v.num_voxels());
  for (int64_t z = 0; z < v.size[2]; ++z)
    for (int64_t y = 0; y < v.size[1]; ++y)
      for (int64_t x = 0; x < v.size[0]; ++x) {
        double dx = x - v.size[0] * 0.4, dy = y - v.size[1] * 0.55, dz = z - v.size[2] * 0.5;
        bool inside = dx * dx / (0.08 * v.size[0] * v.size[0]) + dy * dy / (0.05 * v.size[1] * v.size[1]) +
                          dz * dz / (0.1 * v.size[2] * v.size[2]) < 1;
        l.labels[(z * v.size[1] + y) * v.size[0] + x] = inside ? 1 : 0;
      }
  return l;
}

}  // namespace

TEST(Reorientation, SnapsFlippedAndPermutedAxesToLps) {
  io::Geometry g;
  g.direction = {0, -1, 0, 1, 0, 0, 0, 0, 1};  // index x runs posterior->... world y; index y runs to world -x
  auto r = canonical_reorientation(g);
  EXPECT_EQ(r.source_axis[0], 1);
  EXPECT_TRUE(r.flip[0]);
  EXPECT_EQ(r.source_axis[1], 0);
  EXPECT_FALSE(r.flip[1]);
  EXPECT_EQ(r.source_axis[2], 2);
}

TEST(ThroughPlaneAxis, IsTheClearlyCoarsestSpacingElseTheShortestAxis) {
  EXPECT_EQ(through_plane_axis({1.5, 1.5, 7.7}, {192, 192, 35}, true, 3), 2);
  EXPECT_EQ(through_plane_axis({1, 1, 1}, {35, 51, 35}, true, 3), 2) << "ties go to the last axis";
  EXPECT_EQ(through_plane_axis({3, 1, 1}, {64, 64, 64}, true, 3), 0);
  EXPECT_EQ(through_plane_axis({3, 1, 1}, {64, 64, 40}, false, 3), 2) << "unknown spacing: fewest voxels";
  // BTCV-like: in-plane 3.4 mm after resampling vs 3 mm slices is not clearly coarser.
  EXPECT_EQ(through_plane_axis({3.4, 3.4, 3.0}, {128, 128, 97}, true, 3), 2);
  EXPECT_EQ(through_plane_axis({3, 1, 1}, {64, 64, 64}, true, 2), 2);
}

TEST(Preprocess, MaskRoundTripsToTheSourceGridThroughModelPlanes) {
  // Oblique-free but flipped/permuted direction, non-square planes, anisotropic spacing.
  for (auto direction : {std::array<double, 9>{1, 0, 0, 0, 1, 0, 0, 0, 1}, std::array<double, 9>{-1, 0, 0, 0, 0, 1, 0, 1, 0}}) {
    auto image = make_volume(60, 44, 12, {1.2, 1.2, 4.0}, direction);
    auto labels = ball_labels(image);
    auto volume = prepare(image, &labels, "MR", {});
    std::vector<torch::Tensor> planes;
    for (int64_t s = 0; s < volume.num_slices(); ++s) planes.push_back(label_plane(volume, s, 128).to(torch::kFloat32));
    auto grid = planes_to_source_grid(torch::stack(planes), volume);
    auto mask = to_label_map(grid, image.geometry, 3, 0.5);
    ASSERT_EQ(mask.size, image.size);
    int64_t agree = 0, fg = 0;
    for (size_t i = 0; i < mask.labels.size(); ++i) {
      agree += mask.labels[i] == labels.labels[i];
      fg += labels.labels[i];
    }
    // Up to resampling: only boundary voxels may differ.
    EXPECT_GT(fg, 100);
    EXPECT_GT(static_cast<double>(agree) / mask.labels.size(), 0.99);
  }
}

TEST(Preprocess, IntensityIsClippedToPercentilesAndCtIsWindowed) {
  auto mr = make_volume(20, 20, 4, {1, 1, 1}, {1, 0, 0, 0, 1, 0, 0, 0, 1});
  auto v = prepare(mr, nullptr, "MR", {});
  EXPECT_GE(v.image.min().item<float>(), 0.0f);
  EXPECT_LE(v.image.max().item<float>(), 1.0f);
  auto ct = mr;
  for (auto& x : ct.voxels) x -= 1000;  // -1000..-1 HU, window [-125, 275]
  auto w = prepare(ct, nullptr, "CT", {});
  EXPECT_NEAR(w.image.min().item<float>(), 0.0f, 1e-6) << "values below -125 HU map to 0";
  EXPECT_NEAR(w.image.max().item<float>(), 124.0f / 400.0f, 1e-5) << "-1 HU maps to (-1 + 125) / 400";
}

TEST(Preprocess, RgbBecomesLuminanceUnlessAsked) {
  io::Volume rgb;
  rgb.dims = 2;
  rgb.size = {8, 6, 1};
  rgb.channels = 3;
  rgb.voxels.resize(8 * 6 * 3);
  for (size_t i = 0; i < rgb.voxels.size(); ++i) rgb.voxels[i] = static_cast<float>(i % 11);
  EXPECT_EQ(prepare(rgb, nullptr, "", {}).image.size(0), 1);
  PreprocessOptions keep;
  keep.luminance = false;
  auto v = prepare(rgb, nullptr, "", keep);
  EXPECT_EQ(v.image.size(0), 3);
  EXPECT_EQ(image_plane(v, 0, 32).sizes(), (std::vector<int64_t>{3, 32, 32}));
}

TEST(Preprocess, LabelsOnAnotherGridAreRefused) {
  auto image = make_volume(10, 10, 3, {1, 1, 1}, {1, 0, 0, 0, 1, 0, 0, 0, 1});
  io::LabelMap labels;
  labels.size = {10, 9, 3};
  labels.labels.resize(270);
  EXPECT_THROW(prepare(image, &labels, "", {}), DataError);
}

}  // namespace segicl::data
