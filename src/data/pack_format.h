// Constants of the pack format (docs/formats/pack.md). Changing any layout bumps kPackVersion.
#pragma once

#include <cstdint>

namespace segicl::data::pack_format {

// File: magic[8] | u32 version | u64 header_bytes | header JSON | u64 payload_bytes (compressed)
//       | u64 raw_bytes | u64 fnv1a64(payload) | payload (one zstd frame). Little-endian.
inline constexpr char kMagic[8] = {'S', 'E', 'G', 'I', 'C', 'L', 'P', 'K'};
inline constexpr uint32_t kPackVersion = 1;
inline constexpr uint64_t kMaxHeaderBytes = 64ull << 20;
inline constexpr uint64_t kMaxRawBytes = 16ull << 30;

// Raw payload, in order: images u8 [N, C, R, R]; labels u8 [N, R, R]; then four i32 [N] arrays:
// slice_group, slice_dataset, slice_case, slice_index.

}  // namespace segicl::data::pack_format
