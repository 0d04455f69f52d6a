// Tests of verify_zip_crcs on real torch archives (the checkpoint container).
#include "segicl/core/zip_check.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "segicl/core/error.h"

namespace segicl {
namespace {

std::string torch_archive() {
  torch::serialize::OutputArchive archive;
  archive.write("meta", c10::IValue(std::string("{\"format\": \"x\"}")));
  archive.write("w.weight", torch::arange(4096, torch::kFloat32));
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

TEST(ZipCheck, IntactTorchArchivePasses) {
  EXPECT_NO_THROW(verify_zip_crcs(torch_archive(), "a.pt"));
}

TEST(ZipCheck, FlippedByteInTensorDataIsAFormatErrorNamingTheFile) {
  std::string bytes = torch_archive();
  // The tensor's 16 KiB dominate the archive, so the middle byte is tensor data.
  bytes[bytes.size() / 2] ^= 0x01;
  try {
    verify_zip_crcs(bytes, "a.pt");
    FAIL() << "a flipped byte passed";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), "a.pt");
    EXPECT_NE(e.message().find("CRC-32"), std::string::npos) << e.message();
  }
}

TEST(ZipCheck, TruncatedArchiveIsAFormatError) {
  const std::string bytes = torch_archive();
  EXPECT_THROW(verify_zip_crcs(bytes.substr(0, bytes.size() / 2), "a.pt"), FormatError);
  EXPECT_THROW(verify_zip_crcs(bytes.substr(0, bytes.size() - 30), "a.pt"), FormatError);
  EXPECT_THROW(verify_zip_crcs("", "a.pt"), FormatError);
}

TEST(ZipCheck, NonZipBytesAreAFormatError) {
  EXPECT_THROW(verify_zip_crcs(std::string(4096, 'x'), "a.pt"), FormatError);
}

TEST(ZipCheck, EntriesListNamesAndStoredBytes) {
  const std::string bytes = torch_archive();
  const auto entries = zip_entries(bytes, "a.pt");
  const ZipEntry* version = nullptr;
  for (const auto& e : entries)
    if (e.name.size() >= 8 && e.name.compare(e.name.size() - 8, 8, "/version") == 0) version = &e;
  ASSERT_NE(version, nullptr);
  EXPECT_TRUE(version->stored);
  EXPECT_NE(version->data.find_first_of("0123456789"), std::string_view::npos);
}

// The offset of the central directory record of the entry whose name ends with `suffix`.
size_t central_record(const std::string& zip, const std::string& suffix) {
  for (size_t at = zip.rfind("PK\x01\x02"); at != std::string::npos && at > 0; at = zip.rfind("PK\x01\x02", at - 1)) {
    const size_t name_size = static_cast<unsigned char>(zip[at + 28]) | static_cast<unsigned char>(zip[at + 29]) << 8;
    const std::string name = zip.substr(at + 46, name_size);
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return at;
  }
  ADD_FAILURE() << "no entry " << suffix;
  return 0;
}

void put16(std::string& zip, size_t at, uint16_t v) {
  zip[at] = static_cast<char>(v & 0xFF);
  zip[at + 1] = static_cast<char>(v >> 8);
}

void expect_refused(const std::string& zip, const std::string& what) {
  try {
    verify_zip_crcs(zip, "a.pt");
    FAIL() << "accepted: " << what;
  } catch (const FormatError& e) {
    EXPECT_NE(e.message().find(what), std::string::npos) << e.message();
  }
}

// LibTorch's zip reader (miniz) refuses these inside PyTorchStreamReader's constructor, which
// leaks its state (fuzz_checkpoint; inputs in fuzz/regressions/checkpoint-*-torch-leaks.pt), or
// allocates what the directory says before inflating (4.2 GB for a 12 KB file).
TEST(ZipCheck, EntriesNoTorchReaderCanReadAreRefusedFirst) {
  const std::string intact = torch_archive();
  std::string encrypted = intact;
  put16(encrypted, central_record(encrypted, "/version") + 8, 0x0809);  // flags: bit 0
  expect_refused(encrypted, "encrypted or patched");
  std::string split = intact;
  put16(split, central_record(split, "/version") + 34, 0xFFFF);  // disk number start
  expect_refused(split, "another disk");
  std::string method = intact;
  put16(method, central_record(method, "/version") + 10, 12);  // bzip2
  expect_refused(method, "unknown compression method");
  std::string directory = intact;
  put16(directory, central_record(directory, "/version") + 38, 0x10);  // external attributes
  expect_refused(directory, "marked as a directory");
  std::string huge = intact;
  const size_t pickle = central_record(huge, "/data.pkl");
  put16(huge, pickle + 24, 0xFF00);
  put16(huge, pickle + 26, 0xFFFF);  // uncompressed size 0xFFFFFF00
  expect_refused(huge, "claims more bytes");
}

}  // namespace
}  // namespace segicl
