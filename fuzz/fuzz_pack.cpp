// Fuzz target: data::Pack::open, the reader of `segicl pack` files (header JSON, zstd payload,
// slice tables, task lists). Before writing the input to a file the target repairs the payload
// length and FNV-1a checksum fields when the layout allows, so mutations reach the JSON and
// payload decoding instead of stopping at the checksum. Seeds: fuzz/corpus/fuzz_pack.
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_util.h"
#include "segicl/data/pack.h"

namespace {

uint64_t fnv1a64(const char* data, size_t size) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64, as src/data/pack.cpp
  for (size_t i = 0; i < size; ++i) hash = (hash ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ull;
  return hash;
}

// Layout (src/data/pack_format.h): magic[8] u32 version u64 header_bytes header
// u64 payload_bytes u64 raw_bytes u64 checksum payload. The first input byte says whether to
// repair (even) or to keep the bytes as they are (odd), so both paths are fuzzed.
std::string repaired(const uint8_t* data, size_t size) {
  if (size == 0) return {};
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1 || file.size() < 20) return file;
  uint64_t header_bytes;
  std::memcpy(&header_bytes, file.data() + 12, 8);
  if (header_bytes > file.size() - 20 || file.size() - 20 - header_bytes < 24) return file;
  const size_t lengths = 20 + header_bytes, payload = lengths + 24;
  const uint64_t payload_bytes = file.size() - payload;
  std::memcpy(&file[lengths], &payload_bytes, 8);
  const uint64_t checksum = fnv1a64(file.data() + payload, payload_bytes);
  std::memcpy(&file[lengths + 16], &checksum, 8);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segicl::fuzz::quiet_logs();
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = segicl::fuzz::scratch_path(".pack");
  const std::string file = repaired(data, size);
  segicl::fuzz::write_scratch(path, reinterpret_cast<const uint8_t*>(file.data()), file.size());
  segicl::fuzz::expect_typed_errors([&] {
    auto pack = segicl::data::Pack::open(path);
    // What the sampler relies on: every task's slices are in range and of the task's dataset.
    for (const auto& task : pack->tasks())
      for (const auto* list : {&task.positives, &task.negatives})
        for (int32_t slice : *list)
          if (slice < 0 || slice >= pack->num_slices()) __builtin_trap();
  });
  return 0;
}
