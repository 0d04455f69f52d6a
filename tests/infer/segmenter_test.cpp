// Segmenter: output geometry on oblique/anisotropic grids (and via nibabel), 2D and mixed
// 2D/3D examples, text-only, determinism, uncertainty, context cap, typed input errors; plus the
// example-slice helpers of data/examples.h that the segmenter relies on.
#include "segicl/infer/segmenter.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "segicl/core/error.h"
#include "segicl/data/examples.h"
#include "segicl/data/pack.h"
#include "../train/toy_pack.h"
#include "test_support.h"

namespace segicl::infer {
namespace {

using testing::blob_volume;
using testing::oblique_geometry;
using testing::temp_dir;
using testing::tiny_checkpoint;

const Segmenter& tiny_segmenter() {
  static const Segmenter segmenter(tiny_checkpoint());
  return segmenter;
}

SegmentOptions fast() {
  SegmentOptions o;
  o.ddim_steps = 2;
  o.batch_slices = 8;
  return o;
}

void expect_same_geometry(const io::Geometry& a, const io::Geometry& b) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(a.spacing[i], b.spacing[i]) << "spacing " << i;
    EXPECT_DOUBLE_EQ(a.origin[i], b.origin[i]) << "origin " << i;
  }
  for (int i = 0; i < 9; ++i) EXPECT_DOUBLE_EQ(a.direction[i], b.direction[i]) << "direction " << i;
  EXPECT_EQ(a.spacing_known, b.spacing_known);
}

TEST(Segmenter, VolumeOutputsHaveTheQuerysExactGridOnAnObliqueAnisotropicVolume) {
  auto [query, query_labels] = blob_volume({20, 26, 9}, oblique_geometry());
  io::Geometry other;
  other.spacing = {1.0, 1.0, 2.5};
  auto [example_image, example_labels] = blob_volume({18, 18, 12}, other);
  auto result = tiny_segmenter().segment(query, {{example_image, example_labels, 2, "ex"}}, "segment the blob", fast());
  for (auto size : {result.mask.size, result.probability.size, result.uncertainty.size}) EXPECT_EQ(size, query.size);
  EXPECT_EQ(result.mask.dims, 3);
  EXPECT_EQ(result.probability.dims, 3);
  expect_same_geometry(result.mask.geometry, query.geometry);
  expect_same_geometry(result.probability.geometry, query.geometry);
  expect_same_geometry(result.uncertainty.geometry, query.geometry);
  EXPECT_EQ(static_cast<int64_t>(result.mask.labels.size()), query.num_voxels());
  EXPECT_EQ(static_cast<int64_t>(result.probability.voxels.size()), query.num_voxels());
  EXPECT_EQ(result.num_context, 3);
  EXPECT_EQ(result.slices, 9);  // 3.0 mm is clearly the coarsest axis: sliced along it
  EXPECT_EQ(result.through_axis, 2);
  for (float p : result.probability.voxels) ASSERT_TRUE(p >= 0.0f && p <= 1.0f);

  if (!io::available()) GTEST_SKIP() << "built without ITK";
  const auto dir = temp_dir();
  const auto mask_path = (dir / "mask.nii.gz").string(), image_path = (dir / "query.nii.gz").string();
  io::write_image(query, image_path);
  io::write_labels(result.mask, mask_path);
  io::write_image(result.probability, (dir / "prob.nii.gz").string());
  io::write_image(result.uncertainty, (dir / "unc.nii.gz").string());
  for (const char* name : {"mask.nii.gz", "prob.nii.gz", "unc.nii.gz"}) {
    auto back = io::read_image((dir / name).string());
    EXPECT_EQ(back.size, query.size) << name;
    EXPECT_TRUE(back.geometry.same_as(query.geometry)) << name;
  }

  // Independent reader: nibabel's shape and affine of our mask must equal the query image's.
  if (std::system("/usr/bin/python3 -c 'import nibabel' > /dev/null 2>&1") != 0) GTEST_SKIP() << "no nibabel";
  const auto script = (dir / "compare.py").string();
  std::ofstream(script) << "import sys, nibabel, numpy as np\n"
                           "a = nibabel.load(sys.argv[1]); b = nibabel.load(sys.argv[2])\n"
                           "ok = a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)\n"
                           "print(a.shape, b.shape); print(a.affine); print(b.affine)\n"
                           "sys.exit(0 if ok else 1)\n";
  EXPECT_EQ(std::system(("/usr/bin/python3 " + script + " " + mask_path + " " + image_path).c_str()), 0);
}

TEST(Segmenter, PngQueryWith2dExamplesGivesA2dMaskOfTheSameSize) {
  io::Geometry flat;
  flat.spacing_known = false;
  auto [query, unused] = blob_volume({40, 30, 1}, flat, 2);
  auto [ex_image, ex_labels] = blob_volume({36, 36, 1}, flat, 2, 1);
  if (io::available()) {
    const auto path = (temp_dir() / "query.png").string();
    io::write_image(query, path);
    query = io::read_image(path);
  }
  auto result = tiny_segmenter().segment(query, {{ex_image, ex_labels, -1, ""}, {ex_image, ex_labels, 1, ""}}, "", fast());
  EXPECT_EQ(result.mask.dims, 2);
  EXPECT_EQ(result.mask.size, query.size);
  EXPECT_EQ(result.slices, 1);
  EXPECT_EQ(result.num_context, 2);
  if (!io::available()) return;
  const auto out = (temp_dir() / "mask.png").string();
  io::write_labels(result.mask, out);
  auto back = io::read_labels(out);
  EXPECT_EQ(back.size, query.size);
  EXPECT_EQ(back.labels, result.mask.labels);
}

TEST(Segmenter, ThreeDExamplesGiveSpreadSlicesToA2dQuery) {
  io::Geometry flat;
  flat.spacing_known = false;
  auto [query, unused] = blob_volume({32, 32, 1}, flat, 2);
  io::Geometry thick;
  thick.spacing = {1, 1, 4};
  auto [ex_image, ex_labels] = blob_volume({24, 24, 15}, thick);
  auto options = fast();
  options.slices_per_example = 4;
  auto result = tiny_segmenter().segment(query, {{ex_image, ex_labels, 2, ""}}, "", options);
  EXPECT_EQ(result.num_context, 4);
  EXPECT_EQ(result.mask.size, query.size);
}

TEST(Segmenter, ContextIsCappedAtMaxContextAcrossExamples) {
  io::Geometry thick;
  thick.spacing = {1, 1, 4};
  auto [ex_image, ex_labels] = blob_volume({16, 16, 15}, thick);
  auto [query, unused] = blob_volume({16, 16, 4}, thick);
  const auto cap = tiny_segmenter().max_context();
  std::vector<Example> examples;
  for (int64_t i = 0; i < cap; ++i) examples.push_back({ex_image, ex_labels, -1, ""});
  auto result = tiny_segmenter().segment(query, examples, "", fast());
  EXPECT_EQ(result.num_context, cap);
}

TEST(Segmenter, TextOnlyAndNothingAtAllBothRun) {
  auto [query, unused] = blob_volume({16, 20, 5}, oblique_geometry());
  auto text_only = tiny_segmenter().segment(query, {}, "segment the liver", fast());
  EXPECT_EQ(text_only.num_context, 0);
  EXPECT_EQ(text_only.mask.size, query.size);
  auto nothing = tiny_segmenter().segment(query, {}, "", fast());
  EXPECT_EQ(nothing.mask.size, query.size);
}

TEST(Segmenter, SameSeedGivesIdenticalProbabilityAndSamplesGiveNonNegativeUncertainty) {
  auto [query, unused] = blob_volume({16, 20, 5}, oblique_geometry());
  auto [ex_image, ex_labels] = blob_volume({16, 16, 8}, io::Geometry{});
  std::vector<Example> examples{{ex_image, ex_labels, -1, ""}};
  auto options = fast();
  options.seed = 7;
  auto a = tiny_segmenter().segment(query, examples, "liver", options);
  auto b = tiny_segmenter().segment(query, examples, "liver", options);
  EXPECT_EQ(a.probability.voxels, b.probability.voxels);
  for (float v : a.uncertainty.voxels) ASSERT_EQ(v, 0.0f);  // one sample: no spread
  options.num_samples = 3;
  auto c = tiny_segmenter().segment(query, examples, "liver", options);
  double total = 0;
  for (float v : c.uncertainty.voxels) {
    ASSERT_GE(v, 0.0f);
    total += v;
  }
  EXPECT_GT(total, 0.0);  // random weights, different noise per sample: some spread somewhere
  EXPECT_EQ(c.uncertainty.size, query.size);
}

TEST(Segmenter, ExampleWithEmptyMaskIsADataErrorNamingTheExample) {
  auto [query, unused] = blob_volume({16, 16, 4}, io::Geometry{});
  auto [ex_image, ex_labels] = blob_volume({16, 16, 4}, io::Geometry{});
  auto empty = ex_labels;
  std::fill(empty.labels.begin(), empty.labels.end(), 0);
  try {
    tiny_segmenter().segment(query, {{ex_image, ex_labels, -1, "a.nii.gz"}, {ex_image, empty, -1, "b.nii.gz"}}, "", fast());
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(e.message().find("example 2 (b.nii.gz)"), std::string::npos) << e.message();
    EXPECT_FALSE(e.hint().empty());
  }
  try {
    tiny_segmenter().segment(query, {{ex_image, ex_labels, 7, "a.nii.gz"}}, "", fast());
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(e.message().find("example 1 (a.nii.gz) has no voxel of label 7"), std::string::npos) << e.message();
  }
}

TEST(Segmenter, MismatchedGridsAndBuffersAreTypedErrors) {
  auto [query, unused] = blob_volume({16, 16, 4}, io::Geometry{});
  auto [ex_image, ex_labels] = blob_volume({16, 16, 4}, io::Geometry{});
  auto [other_image, other_labels] = blob_volume({16, 16, 5}, io::Geometry{});
  EXPECT_THROW(tiny_segmenter().segment(query, {{ex_image, other_labels, -1, ""}}, "", fast()), DataError);
  auto truncated = query;
  truncated.voxels.resize(10);
  EXPECT_THROW(tiny_segmenter().segment(truncated, {}, "x", fast()), ShapeError);
  auto empty = query;
  empty.size = {0, 16, 4};
  EXPECT_THROW(tiny_segmenter().segment(empty, {}, "x", fast()), DataError);
  auto bad = fast();
  bad.num_samples = 0;
  EXPECT_THROW(tiny_segmenter().segment(query, {}, "x", bad), UsageError);
  bad = fast();
  bad.postprocess = {"dilate"};
  EXPECT_THROW(tiny_segmenter().segment(query, {}, "x", bad), UsageError);
}

TEST(Segmenter, MissingModelFileIsAnIoError) {
  EXPECT_THROW(Segmenter((temp_dir() / "no-such-model.pt").string()), IoError);
  EXPECT_THROW(resolve_device("tpu"), UsageError);
  EXPECT_TRUE(resolve_device("cpu").is_cpu());
}

TEST(Segmenter, PostprocessingRunsOnTheMask) {
  auto [query, unused] = blob_volume({16, 16, 4}, io::Geometry{});
  auto options = fast();
  options.threshold = 0.0;  // everything foreground: one component, no holes
  options.postprocess = {"largest-cc", "fill-holes"};
  auto result = tiny_segmenter().segment(query, {}, "x", options);
  int64_t fg = 0;
  for (auto v : result.mask.labels) fg += v != 0;
  EXPECT_GT(fg, 0);
}

// A memory at `resolution` from the trainer tests' toy pack (one "liver" task, 4 patients), 2
// slices per patient.
std::string write_liver_memory(int resolution, const std::string& name) {
  const auto dir = temp_dir() / (name + ".pack");
  std::filesystem::create_directories(dir);
  const auto pack = train::testing::write_toy_pack(dir, resolution);
  const auto memory = (temp_dir() / name).string();
  data::MemoryOptions memory_options;
  memory_options.slices_per_group = 2;
  data::ExemplarMemory::build(*data::Pack::open(pack), memory, memory_options);
  return memory;
}

TEST(Segmenter, TextOnlyRecallsExamplesOfTheNamedStructureFromTheMemory) {
  const auto memory = write_liver_memory(32, "liver32.memory");
  Segmenter segmenter(tiny_checkpoint(), c10::Device(c10::kCPU), memory);
  ASSERT_NE(segmenter.memory(), nullptr);
  auto [query, unused] = blob_volume({16, 20, 5}, oblique_geometry());
  auto recalled = segmenter.segment(query, {}, "segment the liver", fast());
  EXPECT_EQ(recalled.num_context, 3);  // the default memory_examples
  EXPECT_EQ(recalled.recalled_tasks, (std::vector<std::string>{"toy_ct/liver"}));
  EXPECT_EQ(recalled.mask.size, query.size);
  auto options = fast();
  options.memory_examples = 5;
  EXPECT_EQ(segmenter.segment(query, {}, "segment the liver", options).num_context, 5);
  options.memory_examples = 0;  // off: the text alone
  EXPECT_EQ(segmenter.segment(query, {}, "segment the liver", options).num_context, 0);
  // A structure the memory lacks runs on the text alone; given examples are never replaced.
  auto unknown = segmenter.segment(query, {}, "segment the optic disc", fast());
  EXPECT_EQ(unknown.num_context, 0);
  EXPECT_TRUE(unknown.recalled_tasks.empty());
  auto [ex_image, ex_labels] = blob_volume({16, 16, 6}, io::Geometry{});
  auto given = segmenter.segment(query, {{ex_image, ex_labels, -1, ""}}, "segment the liver", fast());
  EXPECT_TRUE(given.recalled_tasks.empty());
  EXPECT_EQ(given.num_context, 3);  // slices_per_example of the one 3D example: nothing to top up
  // One 2D example is one pair: kept alone by default; with memory_top_up two recalled pairs
  // top the context up to memory_examples.
  auto [ex2d_image, ex2d_labels] = blob_volume({16, 16, 1}, io::Geometry{}, 2);
  const std::vector<Example> one_pair{{ex2d_image, ex2d_labels, -1, ""}};
  EXPECT_EQ(segmenter.segment(query, one_pair, "segment the liver", fast()).num_context, 1);
  options = fast();
  options.memory_top_up = true;
  auto topped = segmenter.segment(query, one_pair, "segment the liver", options);
  EXPECT_EQ(topped.num_context, 3);
  EXPECT_EQ(topped.recalled_tasks, (std::vector<std::string>{"toy_ct/liver"}));
  EXPECT_EQ(segmenter.segment(query, one_pair, "", options).num_context, 1);  // no text, nothing to recall
}

TEST(Segmenter, SimilarMemoryChoiceRecallsByTheQuerysLayout) {
  const auto memory = write_liver_memory(32, "liver32.memory");
  Segmenter segmenter(tiny_checkpoint(), c10::Device(c10::kCPU), memory);
  auto [query, unused] = blob_volume({16, 20, 5}, oblique_geometry());
  auto options = fast();
  options.memory_choice = "similar";
  auto similar = segmenter.segment(query, {}, "segment the liver", options);
  EXPECT_EQ(similar.num_context, 3);
  EXPECT_EQ(similar.recalled_tasks, (std::vector<std::string>{"toy_ct/liver"}));
  EXPECT_EQ(similar.mask.size, query.size);
  options.memory_choice = "nearest";
  EXPECT_THROW(segmenter.segment(query, {}, "segment the liver", options), UsageError);
}

TEST(Segmenter, FindsTheMemoryBesideItsCheckpointAndRefusesOneOfTheWrongResolution) {
  const auto dir = temp_dir() / "beside";
  std::filesystem::create_directories(dir);
  const auto checkpoint = (dir / "m.pt").string();
  std::filesystem::copy_file(tiny_checkpoint(), checkpoint, std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(Segmenter(checkpoint).memory(), nullptr);
  std::filesystem::copy_file(write_liver_memory(32, "m32.memory"), data::memory_path_for(checkpoint),
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_NE(Segmenter(checkpoint).memory(), nullptr);
  EXPECT_EQ(Segmenter(checkpoint, c10::Device(c10::kCPU), "none").memory(), nullptr);
  const auto wrong = write_liver_memory(16, "m16.memory");
  try {
    Segmenter(checkpoint, c10::Device(c10::kCPU), wrong);
    FAIL() << "a 16^2 memory was accepted by a 32^2 model";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), wrong);
  }
}

data::PreparedVolume labelled_slices(int64_t slices, int64_t first, int64_t last) {
  data::PreparedVolume v;
  v.image = torch::zeros({1, slices, 8, 8});
  v.labels = torch::zeros({slices, 8, 8}, torch::kInt32);
  v.labels.slice(0, first, last + 1).slice(1, 2, 6).slice(2, 2, 6).fill_(3);
  v.through_axis = 2;
  v.source_size = {8, 8, slices};
  return v;
}

TEST(SpreadExampleSlices, PositivesTenToThirtyAndCountThreeGiveTenTwentyThirty) {
  auto v = labelled_slices(40, 10, 30);
  EXPECT_EQ(data::spread_example_slices(v, {3}, 3), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(data::spread_example_slices(v, {}, 1), (std::vector<int64_t>{20}));
  EXPECT_EQ(data::spread_example_slices(v, {3}, 5), (std::vector<int64_t>{10, 15, 20, 25, 30}));
  EXPECT_TRUE(data::spread_example_slices(v, {4}, 3).empty());
  EXPECT_EQ(data::spread_example_slices(v, {3}, 0).size(), 0u);
}

TEST(SpreadExampleSlices, FewPositivesAreAllReturnedAndTinySlicesNeedMinPixels) {
  auto v = labelled_slices(10, 4, 5);
  EXPECT_EQ(data::spread_example_slices(v, {3}, 3), (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(data::spread_example_slices(v, {3}, 3, 17).empty());  // 16 pixels per slice
  auto plane = data::binary_plane(v, 4, {3}, 16);
  EXPECT_EQ(plane.sizes(), (torch::IntArrayRef{1, 16, 16}));
  EXPECT_EQ(plane.sum().item<float>(), 64.0f);  // 4x4 of 8x8 -> 8x8 of 16x16
  EXPECT_EQ(data::binary_plane(v, 0, {3}, 16).sum().item<float>(), 0.0f);
  EXPECT_THROW(data::binary_plane(v, 10, {3}, 16), ShapeError);
}

TEST(ConfidentPlanes, LargestAreasFirstKeptApartAndNoneBelowMinPixels) {
  // Plane s has (s + 1) * 10 pixels above 0.5 for s = 0..5, plus plane 6 at 0.4 everywhere.
  auto p = torch::zeros({7, 16, 16});
  for (int s = 0; s < 6; ++s) p[s].view({-1}).slice(0, 0, (s + 1) * 10).fill_(0.9);
  p[6].fill_(0.4);
  EXPECT_EQ(data::confident_planes(p, 2), (std::vector<int64_t>{5, 3}));  // 4 is next to 5
  EXPECT_EQ(data::confident_planes(p, 2, 0.5, 16, 1), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(data::confident_planes(p, 10, 0.5, 35), (std::vector<int64_t>{5, 3}));  // 40, 50, 60 qualify; 4 is next to 5
  EXPECT_EQ(data::confident_planes(p, 3, 0.3, 16, 1).front(), 6);  // 256 pixels above 0.3
  EXPECT_TRUE(data::confident_planes(torch::zeros({4, 8, 8}), 2).empty());
  EXPECT_TRUE(data::confident_planes(p, 0).empty());
  EXPECT_THROW(data::confident_planes(torch::zeros({8, 8}), 1), ShapeError);
}

}  // namespace
}  // namespace segicl::infer
