// Fuzz target: the checkpoint loader. Each input goes through core::verify_zip_crcs as it is
// (the zip directory walk), then, with the CRC-32s of its stored entries repaired so mutations
// get past that check, through models::load_checkpoint: LibTorch's zip and pickle readers, our
// meta JSON checks, the model rebuilt from the meta config and the tensor table checked against
// it. Seeds: fuzz/corpus/fuzz_checkpoint (tiny crossconv checkpoints, ~12 KB).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "segicl/core/zip_check.h"
#include "segicl/models/checkpoint.h"

namespace {

uint32_t crc32(const char* data, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= static_cast<unsigned char>(data[i]);
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
  }
  return crc ^ 0xFFFFFFFFu;
}

// Little-endian field access that gives up (returns false) past the end: repair is best-effort.
struct Bytes {
  std::string& s;
  bool get(uint64_t at, int n, uint64_t& v) const {
    if (at > s.size() || s.size() - at < static_cast<uint64_t>(n)) return false;
    v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return true;
  }
  void put32(uint64_t at, uint32_t v) {
    if (at > s.size() || s.size() - at < 4) return;
    for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>(v >> (8 * i));
  }
};

// Writes the CRC-32 of every stored entry into its central and local headers (no zip64).
void repair_crcs(std::string& file) {
  Bytes b{file};
  if (file.size() < 22) return;
  uint64_t end = file.size() - 22, v = 0;
  const uint64_t lowest = file.size() > 22 + 65535 ? file.size() - 22 - 65535 : 0;
  while (!(b.get(end, 4, v) && v == 0x06054b50)) {
    if (end == lowest) return;
    --end;
  }
  uint64_t entries = 0, at = 0;
  if (!b.get(end + 10, 2, entries) || !b.get(end + 16, 4, at)) return;
  for (uint64_t i = 0; i < entries && i < 4096; ++i) {
    uint64_t sig, method, size, name, extra, comment, local, lname, lextra;
    if (!b.get(at, 4, sig) || sig != 0x02014b50 || !b.get(at + 10, 2, method) ||
        !b.get(at + 20, 4, size) || !b.get(at + 28, 2, name) || !b.get(at + 30, 2, extra) ||
        !b.get(at + 32, 2, comment) || !b.get(at + 42, 4, local) || !b.get(local + 26, 2, lname) ||
        !b.get(local + 28, 2, lextra))
      return;
    const uint64_t data = local + 30 + lname + lextra;
    if (method == 0 && data <= file.size() && file.size() - data >= size) {
      const uint32_t crc = crc32(file.data() + data, size);
      b.put32(at + 16, crc);
      b.put32(local + 14, crc);
    }
    at += 46 + name + extra + comment;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segicl::fuzz::quiet_logs();
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = segicl::fuzz::scratch_path(".pt");
  std::string file(reinterpret_cast<const char*>(data), size);
  segicl::fuzz::expect_typed_errors([&] { segicl::verify_zip_crcs(file, path); });
  repair_crcs(file);
  segicl::fuzz::write_scratch(path, reinterpret_cast<const uint8_t*>(file.data()), file.size());
  segicl::fuzz::expect_typed_errors([&] { segicl::models::load_checkpoint(path); });
  return 0;
}
