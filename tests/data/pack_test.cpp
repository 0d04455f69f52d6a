#include "segicl/data/pack.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"

namespace segicl::data {
namespace fs = std::filesystem;

namespace {

Dataset toy_dataset(Role role) {
  Dataset d;
  d.name = role == Role::kTrain ? "toy_ct" : "toy_ood";
  d.modality = "CT";
  d.dims = 3;
  d.role = role;
  d.tasks = {{d.name + "/liver", "liver", {1}}, {d.name + "/spleen", "spleen", {2}}};
  for (int i = 0; i < 3; ++i) d.cases.push_back({"c" + std::to_string(i), "g" + std::to_string(i), "", "", "", {}, "", Split::kTrain});
  return d;
}

PreparedVolume toy_volume(int seed) {
  PreparedVolume v;
  torch::manual_seed(seed);
  v.image = torch::rand({1, 6, 40, 40});
  v.labels = torch::zeros({6, 40, 40}, torch::kInt32);
  v.labels.slice(0, 1, 4).slice(1, 5, 20).slice(2, 5, 20).fill_(1);
  v.labels.slice(0, 2, 5).slice(1, 25, 35).slice(2, 22, 30).fill_(2);
  v.through_axis = 2;
  v.dims = 3;
  return v;
}

class PackFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segicl_pack_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "t.pack").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_toy() {
    PackOptions options;
    options.preprocess.resolution = 32;
    options.preprocess.empty_slice_fraction = 1.0;
    PackWriter writer(PackPurpose::kTrain, options);
    auto d = toy_dataset(Role::kTrain);
    for (int i = 0; i < 3; ++i) writer.add_case(d, d.cases[i], toy_volume(i));
    writer.write(path_);
  }
  fs::path dir_;
  std::string path_;
};

}  // namespace

TEST_F(PackFile, RoundTripKeepsSlicesTasksAndGroups) {
  write_toy();
  auto pack = Pack::open(path_);
  EXPECT_EQ(pack->purpose(), PackPurpose::kTrain);
  EXPECT_EQ(pack->resolution(), 32);
  EXPECT_EQ(pack->num_slices(), 18);
  ASSERT_EQ(pack->tasks().size(), 2u);
  EXPECT_EQ(pack->tasks()[0].positives.size(), 9u);  // slices 1..3 of 3 cases
  EXPECT_EQ(pack->tasks()[1].positives.size(), 9u);  // slices 2..4
  EXPECT_EQ(pack->slice_group()[0], 0);
  EXPECT_EQ(pack->slice_group()[17], 2);
  auto expected = (image_plane(toy_volume(0), 1, 32) * 255).round().to(torch::kUInt8);
  EXPECT_TRUE(torch::equal(pack->images()[1], expected));
}

TEST_F(PackFile, TrainPackRefusesOodAndNonTrainSplitCases) {
  PackWriter writer(PackPurpose::kTrain, {});
  auto ood = toy_dataset(Role::kOod);
  EXPECT_THROW(writer.add_case(ood, ood.cases[0], toy_volume(0)), DataError);
  auto train = toy_dataset(Role::kTrain);
  train.cases[1].split = Split::kTest;
  EXPECT_THROW(writer.add_case(train, train.cases[1], toy_volume(0)), DataError);
  EXPECT_EQ(writer.num_slices(), 0);
}

TEST_F(PackFile, TruncatedPackIsAFormatErrorNamingTheFile) {
  write_toy();
  auto bytes = read_file(path_);
  write_file_atomic(path_, bytes.substr(0, bytes.size() - 100));
  try {
    Pack::open(path_);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), path_);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
}

TEST_F(PackFile, CorruptPayloadBadMagicAndFutureVersionAreRefused) {
  write_toy();
  auto bytes = read_file(path_);
  auto corrupt = bytes;
  corrupt[corrupt.size() - 50] ^= 0x5a;
  write_file_atomic(path_, corrupt);
  EXPECT_THROW(Pack::open(path_), FormatError);
  auto magic = bytes;
  magic[0] = 'X';
  write_file_atomic(path_, magic);
  EXPECT_THROW(Pack::open(path_), FormatError);
  auto future = bytes;
  future[8] = 99;
  write_file_atomic(path_, future);
  try {
    Pack::open(path_);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("version 99"), std::string::npos);
  }
  EXPECT_THROW(Pack::open((dir_ / "missing.pack").string()), IoError);
}

}  // namespace segicl::data
