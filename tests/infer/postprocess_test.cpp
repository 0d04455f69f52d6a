// Post-processing known answers: largest component (6-connectivity), per-slice hole filling.
#include "segicl/infer/postprocess.h"

#include <gtest/gtest.h>

#include "segicl/core/error.h"

namespace segicl::infer {
namespace {

io::LabelMap empty_map(int64_t nx, int64_t ny, int64_t nz) {
  io::LabelMap m;
  m.size = {nx, ny, nz};
  m.labels.assign(nx * ny * nz, 0);
  return m;
}

void set(io::LabelMap& m, int64_t x, int64_t y, int64_t z, uint16_t value = 1) {
  m.labels[(z * m.size[1] + y) * m.size[0] + x] = value;
}
uint16_t get(const io::LabelMap& m, int64_t x, int64_t y, int64_t z) {
  return m.labels[(z * m.size[1] + y) * m.size[0] + x];
}

TEST(KeepLargestComponent, KeepsTheBigBlobAndDropsSmallAndDiagonalOnes) {
  auto m = empty_map(10, 10, 4);
  for (int z = 0; z < 3; ++z)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 3; ++x) set(m, x, y, z);  // 27 voxels
  set(m, 8, 8, 3);
  set(m, 8, 7, 3);  // 2-voxel blob
  set(m, 3, 3, 3);  // touches the big blob only diagonally: separate under 6-connectivity
  keep_largest_component(m);
  EXPECT_EQ(count_foreground(m), 27);
  EXPECT_EQ(get(m, 1, 1, 1), 1);
  EXPECT_EQ(get(m, 8, 8, 3), 0);
  EXPECT_EQ(get(m, 3, 3, 3), 0);
  auto blank = empty_map(3, 3, 3);
  keep_largest_component(blank);
  EXPECT_EQ(count_foreground(blank), 0);
}

TEST(FillHoles, FillsARingButNotAnOpenShape) {
  auto m = empty_map(7, 7, 2);
  for (int i = 1; i <= 5; ++i) {
    set(m, i, 1, 0), set(m, i, 5, 0), set(m, 1, i, 0), set(m, 5, i, 0);  // closed ring, z = 0
    set(m, i, 1, 1), set(m, 1, i, 1), set(m, 5, i, 1);                    // open at the bottom, z = 1
  }
  fill_holes(m, 2);
  EXPECT_EQ(get(m, 3, 3, 0), 1);
  EXPECT_EQ(get(m, 2, 2, 0), 1);
  EXPECT_EQ(get(m, 0, 0, 0), 0);
  EXPECT_EQ(count_foreground(m), 25 + 13);
  EXPECT_EQ(get(m, 3, 3, 1), 0);
}

TEST(FillHoles, WorksInThePlanesAcrossTheGivenAxis) {
  auto m = empty_map(5, 3, 5);  // a ring in the x-z plane at y = 1
  for (int i = 0; i < 5; ++i) set(m, i, 1, 0), set(m, i, 1, 4), set(m, 0, 1, i), set(m, 4, 1, i);
  auto across_z = m;
  fill_holes(across_z, 2);
  EXPECT_EQ(get(across_z, 2, 1, 2), 0);  // in x-y planes the ring is two lines: nothing enclosed
  fill_holes(m, 1);
  EXPECT_EQ(get(m, 2, 1, 2), 1);
  EXPECT_EQ(count_foreground(m), 25);
  EXPECT_THROW(fill_holes(m, 3), UsageError);
}

TEST(Postprocess, AppliesNamedStepsAndRejectsUnknownOnes) {
  auto m = empty_map(7, 7, 1);
  for (int i = 1; i <= 5; ++i) set(m, i, 1, 0), set(m, i, 5, 0), set(m, 1, i, 0), set(m, 5, i, 0);
  set(m, 6, 6, 0);  // touches the ring diagonally only
  postprocess(m, {"largest-cc", "fill-holes"});
  EXPECT_EQ(count_foreground(m), 25);
  EXPECT_THROW(postprocess(m, {"erode"}), UsageError);
  try {
    check_postprocess_steps({"largest-cc", "", "erode"});
    ADD_FAILURE() << "erode was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'erode'"), std::string::npos) << e.what();
    EXPECT_EQ(e.hint(), "use largest-cc and/or fill-holes (comma-separated)") << "the hint lists the known steps";
  }
}

}  // namespace
}  // namespace segicl::infer
