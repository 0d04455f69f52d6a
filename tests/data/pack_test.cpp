#include "segicl/data/pack.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

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

// ---- Header values the fuzz target (fuzz/fuzz_pack.cpp) steers: they must be FormatErrors before
// anything is allocated from them. ----

// The toy pack with its header JSON edited and its raw size field set; the payload is unchanged.
std::string with_header(const std::string& pack, const std::function<void(nlohmann::json&)>& edit,
                        uint64_t raw_bytes) {
  uint64_t header_bytes;
  std::memcpy(&header_bytes, pack.data() + 12, 8);
  auto header = nlohmann::json::parse(pack.substr(20, header_bytes));
  edit(header);
  const std::string text = header.dump();
  std::string out = pack.substr(0, 12);
  const uint64_t size = text.size();
  out.append(reinterpret_cast<const char*>(&size), 8);
  out += text;
  std::string tail = pack.substr(20 + header_bytes);
  std::memcpy(&tail[8], &raw_bytes, 8);
  return out + tail;
}

void expect_format_error(const std::string& path, const std::string& part) {
  try {
    Pack::open(path);
    FAIL() << "expected FormatError mentioning " << part;
  } catch (const FormatError& e) {
    EXPECT_NE(e.message().find(part), std::string::npos) << e.message();
    EXPECT_EQ(e.file(), path);
  }
}

TEST_F(PackFile, FloatOrHugeHeaderSizesAreFormatErrors) {
  write_toy();
  const auto bytes = read_file(path_);
  // 1e300 as an int was a float-to-int cast with undefined behaviour.
  write_file_atomic(path_, with_header(bytes, [](auto& h) { h["resolution"] = 1e300; }, 0));
  expect_format_error(path_, "invalid resolution");
  // 2^62 slices x 2064 bytes wraps uint64 around to 0, which matched a raw size of 0.
  write_file_atomic(path_, with_header(bytes, [](auto& h) { h["num_slices"] = int64_t{1} << 62; }, 0));
  expect_format_error(path_, "invalid slice count");
}

TEST_F(PackFile, RawSizeThePayloadCannotHoldIsRefusedBeforeAllocating) {
  write_toy();
  // 200 slices of 4 x 4096^2: 16.8 GB claimed by a payload of a few KB (more than zstd's 32768x).
  const uint64_t claimed = 200ull * (5ull * 4096 * 4096 + 16);
  write_file_atomic(path_, with_header(read_file(path_), [](auto& h) {
    h["num_slices"] = 200;
    h["resolution"] = 4096;
    h["channels"] = 4;
  }, claimed));
  expect_format_error(path_, "cannot hold");
}

TEST_F(PackFile, TaskWithAnUnknownDatasetOrLabelIdIsAFormatError) {
  write_toy();
  const auto bytes = read_file(path_);
  uint64_t raw;
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data() + 12, 8);
  std::memcpy(&raw, bytes.data() + 20 + header_bytes + 8, 8);
  write_file_atomic(path_, with_header(bytes, [](auto& h) { h["tasks"][0]["dataset"] = 7; }, raw));
  expect_format_error(path_, "invalid task dataset");
  write_file_atomic(path_, with_header(bytes, [](auto& h) { h["tasks"][0]["label_ids"] = {1.5}; }, raw));
  expect_format_error(path_, "invalid label id");
}

}  // namespace segicl::data
