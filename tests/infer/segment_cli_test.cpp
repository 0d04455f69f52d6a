// End-to-end runs of the built `segicl segment` binary (label: integration): a synthetic oblique
// NIfTI with a NIfTI example, output geometry, --force protection, batch mode, and the exit code
// and message of a bad call. Uses a random-weight tiny checkpoint written by the test, and the
// shipped model + exemplar memory for the text-only run on the bundled sample.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <sys/wait.h>

#include "segicl/io/volume.h"
#include "test_support.h"

namespace segicl::infer {
namespace {

namespace fs = std::filesystem;
using testing::blob_volume;
using testing::oblique_geometry;
using testing::temp_dir;
using testing::tiny_checkpoint;

struct Run {
  int code = -1;
  std::string out, err;
};

Run run_segicl(const std::string& args) {
  const auto out = (temp_dir() / "stdout.txt").string(), err = (temp_dir() / "stderr.txt").string();
  const std::string command = std::string(SEGICL_BIN) + " --threads 1 " + args + " > " + out + " 2> " + err;
  const int status = std::system(command.c_str());
  Run run;
  run.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::stringstream s;
    s << std::ifstream(path).rdbuf();
    return s.str();
  };
  run.out = slurp(out);
  run.err = slurp(err);
  return run;
}

class SegmentCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!io::available()) GTEST_SKIP() << "built without ITK";
    dir_ = temp_dir() / "cli";
    fs::create_directories(dir_ / "in");
    auto [query, query_labels] = blob_volume({20, 24, 7}, oblique_geometry());
    query_ = query;
    io::write_image(query, (dir_ / "in" / "case_a_0000.nii.gz").string());
    io::write_image(query, (dir_ / "in" / "case_b_0000.nii.gz").string());
    auto [image, labels] = blob_volume({18, 18, 10}, io::Geometry{});
    io::write_image(image, (dir_ / "ex.nii.gz").string());
    io::write_labels(labels, (dir_ / "ex_labels.nii.gz").string());
    common_ = " --model " + tiny_checkpoint() + " --steps 2 --example " + (dir_ / "ex.nii.gz").string() + " " +
              (dir_ / "ex_labels.nii.gz").string();
  }
  fs::path dir_;
  io::Volume query_;
  std::string common_;
};

TEST_F(SegmentCli, WritesAMaskOnTheQuerysGridAndRefusesToOverwrite) {
  const auto query = (dir_ / "in" / "case_a_0000.nii.gz").string(), mask = (dir_ / "mask.nii.gz").string();
  const auto overlay = (dir_ / "overlay.png").string(), unc = (dir_ / "unc.nii.gz").string();
  auto run = run_segicl("segment " + query + " -o " + mask + common_ + " --text liver --samples 2 --overlay " +
                        overlay + " --uncertainty " + unc + " --post largest-cc,fill-holes --force");
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find(mask), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("k=3"), std::string::npos) << run.out;
  auto back = io::read_labels(mask);
  EXPECT_EQ(back.size, query_.size);
  EXPECT_TRUE(back.geometry.same_as(query_.geometry));
  auto picture = io::read_image(overlay);
  EXPECT_EQ(picture.channels, 3);
  EXPECT_EQ(io::read_image(unc).size, query_.size);

  auto again = run_segicl("segment " + query + " -o " + mask + common_);
  EXPECT_EQ(again.code, 2) << again.err;
  EXPECT_NE(again.err.find("--force"), std::string::npos) << again.err;
}

// The shipped model with its shipped exemplar memory, text only, on the bundled CHAOS MR sample
// (never trained on): before the memory this mask was empty (Dice 0); with it the model segments
// from recalled training-pool livers (CT). The bound is far below the measured value (in the
// closing note of this test's commit) so that it catches a broken recall, not noise.
TEST_F(SegmentCli, ShippedModelSegmentsTheBundledMrLiverFromTextAloneThroughItsMemory) {
  const std::string root = SEGICL_SOURCE_DIR;
  const auto query = root + "/data/samples/chaos_mr_t2/images/chaos_mr_t2_p02.nii.gz";
  const auto truth_path = root + "/data/samples/chaos_mr_t2/labels/chaos_mr_t2_p02.nii.gz";
  const auto model = root + "/models/segicl-crossconv.pt";
  const auto mask = (dir_ / "text_only.nii.gz").string();
  auto run = run_segicl("segment " + query + " -o " + mask + " --model " + model + " --text \"segment the liver\" --force");
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("k=3"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("recalled="), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("btcv_ct/liver"), std::string::npos) << run.out;
  auto predicted = io::read_labels(mask), truth = io::read_labels(truth_path);
  ASSERT_EQ(predicted.labels.size(), truth.labels.size());
  int64_t both = 0, sum = 0;
  for (size_t i = 0; i < truth.labels.size(); ++i) {
    const bool p = predicted.labels[i] != 0, t = truth.labels[i] == 1;
    both += p && t;
    sum += p + t;
  }
  const double dice = sum ? 2.0 * both / sum : 0.0;
  EXPECT_GT(dice, 0.2) << "text-only liver Dice on the bundled MR sample";

  auto off = run_segicl("segment " + query + " -o " + mask + " --model " + model +
                        " --text \"segment the liver\" --memory none --force");
  ASSERT_EQ(off.code, 0) << off.err;
  EXPECT_NE(off.out.find("k=0"), std::string::npos) << off.out;
  EXPECT_EQ(off.out.find("recalled="), std::string::npos) << off.out;
}

TEST_F(SegmentCli, BatchModeSegmentsEveryFileInTheFolder) {
  const auto out = dir_ / "pred";
  fs::remove_all(out);
  auto run = run_segicl("segment -i " + (dir_ / "in").string() + " -o " + out.string() + common_);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_TRUE(fs::exists(out / "case_a.nii.gz"));
  EXPECT_TRUE(fs::exists(out / "case_b.nii.gz"));
  EXPECT_NE(run.err.find("[2/2]"), std::string::npos) << run.err;
}

TEST_F(SegmentCli, ExamplesDirPairsNnunetStyleImagesWithLabels) {
  const auto examples = dir_ / "examples";
  fs::create_directories(examples / "imagesTr");
  fs::create_directories(examples / "labelsTr");
  fs::copy_file(dir_ / "ex.nii.gz", examples / "imagesTr" / "ex_0000.nii.gz", fs::copy_options::overwrite_existing);
  fs::copy_file(dir_ / "ex_labels.nii.gz", examples / "labelsTr" / "ex.nii.gz", fs::copy_options::overwrite_existing);
  const auto mask = (dir_ / "from_dir.nii.gz").string();
  auto run = run_segicl("segment " + (dir_ / "in" / "case_a_0000.nii.gz").string() + " -o " + mask + " --model " +
                        tiny_checkpoint() + " --steps 1 --force --examples-dir " + examples.string() +
                        " --example-label 2 --slices-per-example 2");
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("k=2"), std::string::npos) << run.out;
  fs::remove(examples / "labelsTr" / "ex.nii.gz");
  auto missing = run_segicl("segment " + (dir_ / "in" / "case_a_0000.nii.gz").string() + " -o " + mask +
                            " --model " + tiny_checkpoint() + " --force --examples-dir " + examples.string());
  EXPECT_EQ(missing.code, 3) << missing.err;
  EXPECT_NE(missing.err.find("ex_0000.nii.gz"), std::string::npos) << missing.err;
}

TEST_F(SegmentCli, MissingExampleLabelFileExitsWithThreeAndAHint) {
  auto run = run_segicl("segment " + (dir_ / "in" / "case_a_0000.nii.gz").string() + " -o " +
                        (dir_ / "never.nii.gz").string() + " --model " + tiny_checkpoint() + " --example " +
                        (dir_ / "ex.nii.gz").string() + " " + (dir_ / "missing_labels.nii.gz").string());
  EXPECT_EQ(run.code, 3) << run.err;
  EXPECT_NE(run.err.find("error:"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("hint:"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(dir_ / "never.nii.gz"));
}

TEST_F(SegmentCli, HelpShowsDefaultsAndAnExample) {
  auto run = run_segicl("segment --help");
  EXPECT_EQ(run.code, 0);
  EXPECT_NE(run.out.find("--steps"), std::string::npos);
  EXPECT_NE(run.out.find("e.g. segicl segment"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace segicl::infer
