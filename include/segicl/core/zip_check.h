// Integrity check of zip archives (the container of torch checkpoints): every entry's bytes against
// the CRC-32 its central directory records. Not a zip reader: it extracts nothing.
#pragma once

#include <string>
#include <string_view>

namespace segicl {

// Verifies the stored (uncompressed) entries of the zip archive `bytes` against their CRC-32s.
// LibTorch's reader skips this check, so without it a flipped bit in a tensor loads silently.
// Entries stored with compression are not checked (torch writes none). Throws FormatError naming
// `path` (and the entry) on a bad CRC or a malformed or truncated directory. Thread-safe.
void verify_zip_crcs(std::string_view bytes, const std::string& path);

}  // namespace segicl
