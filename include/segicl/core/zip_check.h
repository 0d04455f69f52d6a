// Integrity check of zip archives (the container of torch checkpoints): every entry's bytes against
// the CRC-32 its central directory records. Not a zip reader: it extracts nothing.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace segicl {

// Verifies the entries of the zip archive `bytes` against their CRC-32s. LibTorch's reader skips
// this check, so without it a flipped bit in a tensor loads silently. Deflated entries (torch
// compresses only its code/ sources) are inflated piecewise to check them when segicl_core is built
// with zlib (the CPU build; the GPU build if its machine has zlib's headers). Throws FormatError naming
// `path` (and the entry) on a bad CRC, a malformed or truncated directory, an unknown compression
// method, or an uncompressed size its data cannot hold (deflate expands at most 1032:1). Thread-safe.
void verify_zip_crcs(std::string_view bytes, const std::string& path);

// One entry of a zip archive: its name and, for a stored (uncompressed) entry, its bytes.
struct ZipEntry {
  std::string name;
  bool stored = false;
  std::string_view data;  // points into the archive's bytes; empty unless stored
};

// The entries of the archive `bytes` in directory order, CRC-checked as verify_zip_crcs does.
// Same errors. Thread-safe.
std::vector<ZipEntry> zip_entries(std::string_view bytes, const std::string& path);

}  // namespace segicl
