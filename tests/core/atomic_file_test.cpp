#include "segicl/core/atomic_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "segicl/core/error.h"

namespace segicl {
namespace fs = std::filesystem;

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segicl_atomic_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(AtomicFile, WriteThenReadRoundTrips) {
  auto path = (dir_ / "a.json").string();
  write_file_atomic(path, "first");
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
}

TEST_F(AtomicFile, FailedWriterLeavesOldFileAndNoTemp) {
  auto path = (dir_ / "b.bin").string();
  write_file_atomic(path, "old");
  EXPECT_THROW(publish_atomic(path,
                              [](const std::string& tmp) {
                                write_file_atomic(tmp, "partial");
                                throw DataError("writer failed midway");
                              }),
               DataError);
  EXPECT_EQ(read_file(path), "old");
  int files = 0;
  for (auto& entry : fs::directory_iterator(dir_)) files += entry.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(AtomicFile, MissingFileIsIoErrorNamingIt) {
  try {
    read_file((dir_ / "nope").string());
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(e.file().find("nope"), std::string::npos);
  }
}

// A writer killed mid-write leaves its temp; the next publish of the same target removes it, but
// not a temp of a live process (which may be writing right now) nor other files.
TEST_F(AtomicFile, TempOfADeadWriterIsRemovedByTheNextPublish) {
  const auto path = (dir_ / "checkpoint.pt").string();
  // pid_max is at most 2^22 on Linux, so this pid belongs to no process.
  const auto dead = dir_ / ".checkpoint.tmp999999999.pt";
  const auto live = dir_ / (".checkpoint.tmp" + std::to_string(::getppid()) + ".pt");
  const auto other = dir_ / ".other.tmp999999999.pt";
  for (const auto& p : {dead, live, other}) write_file_atomic(p.string(), "partial");
  write_file_atomic(path, "whole");
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_EQ(read_file(path), "whole");
}

}  // namespace segicl
