// Fixed-size integer fields of untrusted files held in memory: one bounds-checked reader for the
// checks that walk a file's own offsets before a library trusts them (the zip directory of a
// checkpoint, pickle opcodes, BMP and TIFF headers).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace segicl {

// The unsigned integer of `size` bytes (1 to 8) at offset `at` of `bytes`, in little- or
// big-endian order; nullopt when the field does not lie wholly inside `bytes` (an offset read from
// a file may point anywhere, including past 2^63).
inline std::optional<uint64_t> read_uint(std::string_view bytes, uint64_t at, int size,
                                         bool little = true) {
  if (size < 1 || size > 8) return std::nullopt;
  if (at > bytes.size() || bytes.size() - at < static_cast<uint64_t>(size)) return std::nullopt;
  uint64_t value = 0;
  for (int i = 0; i < size; ++i) {
    const uint64_t byte = static_cast<unsigned char>(bytes[at + (little ? i : size - 1 - i)]);
    value |= byte << (8 * i);
  }
  return value;
}

}  // namespace segicl
