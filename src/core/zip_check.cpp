// Zip CRC-32 verification for checkpoints (see zip_check.h); follows PKWARE's APPNOTE 6.3.
#include "segicl/core/zip_check.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

#include "segicl/core/bytes.h"
#include "segicl/core/error.h"

#if SEGICL_HAVE_ZLIB
#include <zlib.h>
#endif

namespace segicl {
namespace {

constexpr const char* kHint = "the file is truncated or corrupt; copy it again or retrain";

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the one zip uses.
uint32_t crc32(std::string_view data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

// Little-endian reads with bounds checks: a truncated directory is a FormatError, not UB.
class Reader {
 public:
  Reader(std::string_view bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <typename T>
  T at(uint64_t offset) const {
    const std::optional<uint64_t> value = read_uint(bytes_, offset, sizeof(T));
    if (!value) SEGICL_THROW(FormatError, "zip directory points past the end of the file", path_, kHint);
    return static_cast<T>(*value);
  }
  std::string_view slice(uint64_t offset, uint64_t size) const {
    if (offset > bytes_.size() || bytes_.size() - offset < size)
      SEGICL_THROW(FormatError, "zip entry runs past the end of the file", path_, kHint);
    return bytes_.substr(offset, size);
  }

 private:
  std::string_view bytes_;
  const std::string& path_;
};

#if SEGICL_HAVE_ZLIB
// Inflates a deflated entry in 64 KiB pieces (never more than that in memory) and checks its size
// and CRC-32 against the directory. LibTorch's miniz is built without CRC checks, so without this
// a damaged `code/` record reaches the TorchScript compiler (a crash in parseClassConstant,
// fuzz_checkpoint).
void check_deflated(std::string_view data, uint64_t size, uint32_t crc, const std::string& name,
                    const std::string& path) {
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) SEGICL_THROW(FormatError, "zlib failed to start", path, kHint);
  std::array<unsigned char, 65536> out;
  uLong running = ::crc32(0L, Z_NULL, 0);
  uint64_t total = 0;
  int status = Z_OK;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  while (status == Z_OK) {
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    status = inflate(&z, Z_NO_FLUSH);
    const uInt produced = static_cast<uInt>(out.size()) - z.avail_out;
    running = ::crc32(running, out.data(), produced);
    total += produced;
    if (total > size) break;  // more than the directory says: refuse without inflating the rest
    if (status == Z_OK && produced == 0 && z.avail_in == 0) break;  // stream ends early
  }
  inflateEnd(&z);
  if (status != Z_STREAM_END || total != size || static_cast<uint32_t>(running) != crc)
    SEGICL_THROW(FormatError, "zip entry '" + name + "' fails its CRC-32 check (corrupt file)", path, kHint);
}
#endif

}  // namespace

void verify_zip_crcs(std::string_view bytes, const std::string& path) { zip_entries(bytes, path); }

std::vector<ZipEntry> zip_entries(std::string_view bytes, const std::string& path) {
  std::vector<ZipEntry> out;
  const Reader r(bytes, path);
  // End of central directory: 22 bytes plus a comment of at most 65535, at the end of the file.
  constexpr uint32_t kEnd = 0x06054b50, kEnd64 = 0x06064b50, kLocator64 = 0x07064b50;
  constexpr uint32_t kCentral = 0x02014b50, kLocal = 0x04034b50;
  if (bytes.size() < 22) SEGICL_THROW(FormatError, "file too short for a zip archive", path, kHint);
  uint64_t end = bytes.size() - 22;
  const uint64_t lowest = bytes.size() > 22 + 65535 ? bytes.size() - 22 - 65535 : 0;
  while (r.at<uint32_t>(end) != kEnd) {
    if (end == lowest)
      SEGICL_THROW(FormatError, "no zip end record (truncated file?)", path, kHint);
    --end;
  }
  uint64_t entries = r.at<uint16_t>(end + 10);
  uint64_t directory = r.at<uint32_t>(end + 16);
  if (entries == 0xFFFF || directory == 0xFFFFFFFF) {
    if (end < 20 || r.at<uint32_t>(end - 20) != kLocator64)
      SEGICL_THROW(FormatError, "zip64 end locator missing", path, kHint);
    const uint64_t end64 = r.at<uint64_t>(end - 20 + 8);
    if (r.at<uint32_t>(end64) != kEnd64)
      SEGICL_THROW(FormatError, "zip64 end record missing", path, kHint);
    entries = r.at<uint64_t>(end64 + 32);
    directory = r.at<uint64_t>(end64 + 48);
  }
  uint64_t at = directory;
  for (uint64_t i = 0; i < entries; ++i) {
    if (r.at<uint32_t>(at) != kCentral)
      SEGICL_THROW(FormatError, "zip central directory is damaged", path, kHint);
    const uint16_t flags = r.at<uint16_t>(at + 8), method = r.at<uint16_t>(at + 10);
    const uint32_t crc = r.at<uint32_t>(at + 16);
    uint64_t compressed = r.at<uint32_t>(at + 20);
    uint64_t uncompressed = r.at<uint32_t>(at + 24);
    const uint16_t name_size = r.at<uint16_t>(at + 28), extra_size = r.at<uint16_t>(at + 30),
                   comment_size = r.at<uint16_t>(at + 32);
    uint64_t local = r.at<uint32_t>(at + 42);
    const std::string name(r.slice(at + 46, name_size));
    // Zip64 extra field (id 1): the 64-bit values of exactly the fields saturated above, in order.
    for (uint64_t x = at + 46 + name_size; x + 4 <= at + 46 + name_size + extra_size;) {
      const uint16_t id = r.at<uint16_t>(x), size = r.at<uint16_t>(x + 2);
      if (id == 1) {
        uint64_t field = x + 4;
        for (uint64_t* value : {&uncompressed, &compressed, &local})
          if (*value == 0xFFFFFFFF) {
            *value = r.at<uint64_t>(field);
            field += 8;
          }
      }
      x += 4 + size;
    }
    if (r.at<uint32_t>(local) != kLocal)
      SEGICL_THROW(FormatError, "zip entry '" + name + "' has no local header", path, kHint);
    const uint64_t data = local + 30 + r.at<uint16_t>(local + 26) + r.at<uint16_t>(local + 28);
    ZipEntry entry{name, method == 0, {}};
    // Readers allocate the uncompressed size the directory states before inflating (LibTorch's
    // getRecord: 4.2 GB for a 12 KB checkpoint in fuzz_checkpoint). Deflate expands at most
    // 1032:1, and a stored entry is as long as it is; a size beyond that is a corrupt directory.
    // Encrypted (flag bits 0, 6, 13) or patched (bit 5) entries: no reader of ours handles them,
    // and LibTorch's zip reader fails on them inside its constructor, leaking its state.
    // Split (multi-disk) archives likewise: every entry must start on disk 0.
    if (r.at<uint16_t>(at + 34) != 0)
      SEGICL_THROW(FormatError, "zip entry '" + name + "' sits on another disk (split archive)", path, kHint);
    // And a directory entry (MS-DOS attribute bit 4, or a name ending in '/') has no bytes to read.
    if ((r.at<uint32_t>(at + 38) & 0x10) != 0 || (!name.empty() && name.back() == '/'))
      SEGICL_THROW(FormatError, "zip entry '" + name + "' is marked as a directory", path, kHint);
    if (flags & (1u << 0 | 1u << 5 | 1u << 6 | 1u << 13))
      SEGICL_THROW(FormatError, "zip entry '" + name + "' is encrypted or patched", path, kHint);
    if (method != 0 && method != 8)
      SEGICL_THROW(FormatError, "zip entry '" + name + "' uses an unknown compression method", path, kHint);
    r.slice(data, compressed);
    const uint64_t most = method == 0 ? compressed : compressed * 1032 + 64;
    if (uncompressed > most)
      SEGICL_THROW(FormatError, "zip entry '" + name + "' claims more bytes than its data can hold", path, kHint);
#if SEGICL_HAVE_ZLIB
    if (method == 8) check_deflated(r.slice(data, compressed), uncompressed, crc, name, path);
#endif
    if (method == 0) {
      entry.data = r.slice(data, compressed);
      if (crc32(entry.data) != crc)
        SEGICL_THROW(FormatError, "zip entry '" + name + "' fails its CRC-32 check (corrupt file)",
                     path, kHint);
    }
    out.push_back(std::move(entry));
    at += 46 + name_size + extra_size + comment_size;
  }
  return out;
}

}  // namespace segicl
