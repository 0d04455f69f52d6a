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

}  // namespace
}  // namespace segicl
