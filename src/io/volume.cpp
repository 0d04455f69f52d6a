// ITK-backed reading and writing of images and label maps. Every ITK type and exception stays in
// this file: errors are translated into segicl::IoError / DataError with the path and a hint.
// It does not resample, reorient or rescale: geometry is passed through exactly as ITK gives it.
#include "segicl/io/volume.h"

#include <itkGDCMImageIO.h>
#include <itkGDCMSeriesFileNames.h>
#include <itkImage.h>
#include <itkImageFileReader.h>
#include <itkImageFileWriter.h>
#include <itkImageIOBase.h>
#include <itkImageIOFactory.h>
#include <itkImageSeriesReader.h>
#include <itkBMPImageIO.h>
#include <itkJPEGImageIO.h>
#include <itkMetaImageIO.h>
#include <itkNiftiImageIO.h>
#include <itkNrrdImageIO.h>
#include <itkPNGImageIO.h>
#include <itkTIFFImageIO.h>
#include <itkRGBPixel.h>
#include <itkVectorImage.h>
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <csetjmp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "segicl/core/atomic_file.h"
#include "segicl/core/bytes.h"
#include "segicl/core/error.h"

namespace segicl::io {
namespace {
namespace fs = std::filesystem;

constexpr const char* kReadExtensions =
    ".png .jpg .jpeg .bmp .tif .tiff .nii .nii.gz .mha .mhd .nrrd .nhdr .dcm, or a DICOM series "
    "directory";
// Only formats whose extension survives publish_atomic's temp name and that fit in one file.
constexpr const char* kWriteExtensions = ".nii.gz .nii .mha .nrrd .png";
constexpr const char* kCorruptHint = "the file is truncated or corrupt; re-export it";
// Largest data block a header may claim (1 TiB): beyond any real image, and small enough that
// sizes derived from it cannot overflow int64.
constexpr int64_t kMaxDataBytes = int64_t{1} << 40;
// Most bytes of image data a stored byte can hold: deflate expands at most 1032-fold and TIFF's
// LZW about 2730-fold, so a file claiming more than this per byte is corrupt. Checked before
// anything is allocated or decoded: a 4 KB file could otherwise claim (and get) gigabytes.
constexpr uint64_t kMaxInflation = 4096;

// True when a header's `claimed` data bytes cannot come from the file at `path`.
bool claims_too_much(const std::string& path, uint64_t claimed) {
  std::error_code ec;
  const uint64_t stored = std::filesystem::file_size(path, ec);
  return !ec && claimed / kMaxInflation > stored;
}

using ReadImage = itk::VectorImage<float, 3>;

enum class Format { kPlanar, kNifti, kMeta, kNrrd, kDicom, kUnknown };

// Lower-case extension, treating ".nii.gz" as one extension.
std::string extension_of(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string gz = ".nii.gz";
  if (name.size() > gz.size() && name.compare(name.size() - gz.size(), gz.size(), gz) == 0) {
    return gz;
  }
  return fs::path(name).extension().string();
}

Format format_of(const std::string& ext) {
  if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tif" ||
      ext == ".tiff") {
    return Format::kPlanar;
  }
  if (ext == ".nii" || ext == ".nii.gz") return Format::kNifti;
  if (ext == ".mha" || ext == ".mhd") return Format::kMeta;
  if (ext == ".nrrd" || ext == ".nhdr") return Format::kNrrd;
  if (ext == ".dcm") return Format::kDicom;
  return Format::kUnknown;
}

// ITK descriptions can span several lines and repeat the source location; keep the first line.
std::string shorten(const std::string& description) {
  std::string text = description;
  size_t eol = text.find('\n');
  if (eol != std::string::npos) text = text.substr(0, eol);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  constexpr size_t kMax = 240;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text.empty() ? std::string("unknown ITK error") : text;
}

// Runs `body`, turning any ITK or standard exception into an IoError about `path`; segicl errors
// pass through unchanged.
template <typename Body>
auto translate_itk(const std::string& path, const std::string& action, const char* hint,
                   Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const segicl::Error&) {
    throw;
  } catch (const itk::ExceptionObject& e) {
    SEGICL_THROW(IoError, action + ": " + shorten(e.GetDescription()), path, hint);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    SEGICL_THROW(IoError, action + ": " + shorten(e.what()), path, hint);
  }
}

// ---- NIfTI integrity ----
// ITK 5.2's NIfTI reader (nifti1_io) neither fails on a short data block (missing voxels are
// left as zeros) nor keeps NaN/Inf (nifti_read_buffer silently sets them to 0). Both would hand
// the model a plausible-looking but wrong image, so we scan the raw stream ourselves: one extra
// decompression pass (~0.1 s for a 30 MB volume).

struct NiftiScan {
  int64_t nonfinite = 0;  // NaN/Inf values in float32/float64 data
};

template <typename T>
T load(const unsigned char* bytes, bool swap) {
  unsigned char copy[sizeof(T)];
  std::memcpy(copy, bytes, sizeof(T));
  if (swap) std::reverse(copy, copy + sizeof(T));
  T value;
  std::memcpy(&value, copy, sizeof(T));
  return value;
}

// Reads up to `size` bytes; returns the count read (less only at end of stream or error).
int64_t read_fully(gzFile file, unsigned char* out, int64_t size) {
  int64_t done = 0;
  while (done < size) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(size - done, 1 << 20));
    const int got = gzread(file, out + done, chunk);
    if (got <= 0) break;
    done += got;
  }
  return done;
}

NiftiScan scan_nifti(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) SEGICL_THROW(IoError, "cannot open file", path, "check the file's permissions");
  struct Closer {
    gzFile f;
    ~Closer() { gzclose(f); }
  } closer{file};

  unsigned char header[540];
  const int64_t got = read_fully(file, header, 348);
  // Too short or not NIfTI at all: leave the diagnosis to ITK, which refuses such files.
  if (got < 348) return {};
  const int32_t raw_size = load<int32_t>(header, false);
  bool swap = false;
  bool nifti2 = false;
  if (raw_size == 348 || raw_size == 540) {
    nifti2 = raw_size == 540;
  } else if (load<int32_t>(header, true) == 348 || load<int32_t>(header, true) == 540) {
    swap = true;
    nifti2 = load<int32_t>(header, true) == 540;
  } else {
    // nifti1_io still reads a file whose sizeof_hdr is wrong (it guesses the byte order from
    // dim[0]), and so past this scan (fuzz_nifti). The standard says it MUST be 348 (540).
    SEGICL_THROW(IoError, "not a NIfTI file (sizeof_hdr is " + std::to_string(raw_size) + ", not 348)",
                 path, kCorruptHint);
  }
  int64_t header_bytes = 348;
  if (nifti2) {
    if (read_fully(file, header + 348, 540 - 348) < 540 - 348) return {};
    header_bytes = 540;
  }
  int64_t dim[8];
  int datatype, bitpix;
  double vox_offset;
  if (nifti2) {
    datatype = load<int16_t>(header + 12, swap);
    bitpix = load<int16_t>(header + 14, swap);
    for (int i = 0; i < 8; ++i) dim[i] = load<int64_t>(header + 16 + 8 * i, swap);
    vox_offset = static_cast<double>(load<int64_t>(header + 168, swap));
  } else {
    for (int i = 0; i < 8; ++i) dim[i] = load<int16_t>(header + 40 + 2 * i, swap);
    datatype = load<int16_t>(header + 70, swap);
    bitpix = load<int16_t>(header + 72, swap);
    vox_offset = load<float>(header + 108, swap);
  }
  // Spacing and orientation must be finite: ITK 5.2 hands a NaN in the sform/qform to vnl_svd,
  // whose assert_finite calls abort() (fuzz_nifti). They must also be far from the float range:
  // an sform entry of -2^127 overflowed inside vnl_svd<float> (LINPACK's ssvdc) to a NaN it
  // iterates on for good, a hang (fuzz_nifti). No scanner geometry comes near 10^9 mm (1000 km),
  // and below that no product or sum of squares in ITK's orientation code overflows a float.
  // pixdim[1..7], quatern_b..qoffset_z, srow_*. Checked before the early return below: nifti1_io
  // reads a file with bitpix 0 all the same (fuzz_nifti: NaN quaternion, bitpix 0, abort()).
  {
    constexpr double kLargestGeometryValue = 1e9;
    bool plausible = true;
    auto check = [&](int offset, int count) {
      for (int i = 0; i < count; ++i) {
        const double value = nifti2 ? load<double>(header + offset + 8 * i, swap)
                                    : load<float>(header + offset + 4 * i, swap);
        plausible &= std::isfinite(value) && std::abs(value) <= kLargestGeometryValue;
      }
    };
    if (nifti2) {
      check(104 + 8, 7);
      check(352, 18);
    } else {
      check(76 + 4, 7);
      check(256, 18);
    }
    if (!plausible) {
      SEGICL_THROW(IoError,
                   "NIfTI header has a NaN, infinite or implausibly large (over 10^9) spacing or "
                   "orientation",
                   path, kCorruptHint);
    }
  }
  if (dim[0] < 1 || dim[0] > 7 || bitpix <= 0 || bitpix % 8 != 0) return {};
  // The header's sizes are untrusted: products are overflow-checked (fuzz_nifti found a signed
  // overflow here), and an offset or size past any real file is refused before it is used.
  int64_t expected = bitpix / 8;  // data bytes
  for (int i = 1; i <= dim[0]; ++i) {
    if (dim[i] <= 0) {
      SEGICL_THROW(DataError,
                   "image has size " + std::to_string(dim[i]) + " along axis " + std::to_string(i) +
                       "; it holds no voxels",
                   path, "the file holds no voxels; re-export it");
    }
    if (__builtin_mul_overflow(expected, dim[i], &expected) || expected > kMaxDataBytes) {
      SEGICL_THROW(IoError, "NIfTI header claims an implausible image size (over 2^40 bytes)",
                   path, kCorruptHint);
    }
  }
  // vox_offset is a float in NIfTI-1: NaN or a huge value must not reach the integer cast.
  if (!(vox_offset >= 0.0 && vox_offset <= static_cast<double>(kMaxDataBytes))) {
    SEGICL_THROW(IoError, "NIfTI header has an invalid data offset (vox_offset)", path, kCorruptHint);
  }
  int64_t skip = std::max<int64_t>(0, static_cast<int64_t>(vox_offset) - header_bytes);

  NiftiScan scan;
  constexpr int64_t kChunk = 1 << 20;  // a multiple of every element size
  std::vector<unsigned char> buffer(kChunk);
  // Header extensions, skipped a chunk at a time (a fuzzed offset made one huge buffer here).
  while (skip > 0) {
    const int64_t want = std::min(kChunk, skip);
    if (read_fully(file, buffer.data(), want) < want) {
      SEGICL_THROW(IoError, "file ends inside the NIfTI header extensions", path, kCorruptHint);
    }
    skip -= want;
  }
  const bool is_float32 = datatype == 16, is_float64 = datatype == 64;
  int64_t done = 0;
  while (done < expected) {
    const int64_t want = std::min(kChunk, expected - done);
    const int64_t n = read_fully(file, buffer.data(), want);
    if (is_float32) {
      for (int64_t i = 0; i + 4 <= n; i += 4)
        scan.nonfinite += !std::isfinite(load<float>(&buffer[i], swap));
    } else if (is_float64) {
      for (int64_t i = 0; i + 8 <= n; i += 8)
        scan.nonfinite += !std::isfinite(load<double>(&buffer[i], swap));
    }
    done += n;
    if (n < want) break;
  }
  int zerr = Z_OK;
  const char* zmessage = gzerror(file, &zerr);
  if (done < expected) {
    SEGICL_THROW(IoError,
                 "file ends after " + std::to_string(done) + " of " + std::to_string(expected) +
                     " voxel data bytes" +
                     (zerr != Z_OK && zerr != Z_STREAM_END ? std::string(" (") + zmessage + ")"
                                                           : std::string()),
                 path, kCorruptHint);
  }
  return scan;
}

// ---- PNG integrity ----
// ITK 5.2's PNGImageIO installs no setjmp for libpng, so any libpng error (a bad chunk CRC or
// length, broken compressed data; found by fuzz_image2d in seconds) ends in abort(): one corrupt
// upload killed the whole server. So the file is first decoded here, with libpng's errors caught,
// and only a PNG that libpng reads completely reaches ITK (the same libpng then reads it again;
// a 2D image decodes in milliseconds). C-style on purpose: libpng reports errors by longjmp, which
// must not jump over C++ destructors.

struct PngErrorContext {
  char message[200];
};

[[noreturn]] void png_on_error(png_structp png, png_const_charp message) {
  auto* context = static_cast<PngErrorContext*>(png_get_error_ptr(png));
  std::snprintf(context->message, sizeof context->message, "%s", message);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // libpng recovers from these

// Empty when libpng decodes every row of the file, else libpng's error message.
std::string png_problem(const std::string& path) {
  PngErrorContext context{"unknown libpng error"};
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return {};  // unreadable: ITK reports it with its own message
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &context, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  png_bytep volatile row = nullptr;
  if (!png || !info) {
    png_destroy_read_struct(png ? &png : nullptr, nullptr, nullptr);
    std::fclose(file);
    return "out of memory";
  }
  if (setjmp(png_jmpbuf(png))) {
    png_free(png, row);
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(file);
    return context.message;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  // libpng would decode (and ITK allocate) whatever size the header claims.
  if (claims_too_much(path, uint64_t{png_get_image_width(png, info)} * png_get_image_height(png, info) *
                                png_get_channels(png, info) * png_get_bit_depth(png, info) / 8))
    png_error(png, "header claims more image data than the file can hold");
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  row = static_cast<png_bytep>(png_malloc(png, png_get_rowbytes(png, info)));
  const png_uint_32 height = png_get_image_height(png, info);
  for (int pass = 0; pass < passes; ++pass)
    for (png_uint_32 y = 0; y < height; ++y) png_read_row(png, row, nullptr);
  png_read_end(png, nullptr);
  png_free(png, row);
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(file);
  return {};
}

void check_png(const std::string& path) {
  const std::string problem = png_problem(path);
  if (!problem.empty())
    SEGICL_THROW(IoError, "not a readable PNG file (" + shorten(problem) + ")", path, kCorruptHint);
}

// ---- JPEG integrity ----
// ITK 5.2's JPEG reader crashed (a wild jump: a corrupted stack after libjpeg's error longjmp)
// on a corrupt JPEG that fuzz_image2d found. As for PNG, the file is decoded here first with
// libjpeg's errors caught, and only a JPEG that libjpeg reads completely reaches ITK.

struct JpegErrorContext {
  jpeg_error_mgr manager;  // first member: libjpeg hands us a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_on_error(j_common_ptr info) {
  auto* context = reinterpret_cast<JpegErrorContext*>(info->err);
  (*info->err->format_message)(info, context->message);
  std::longjmp(context->jump, 1);
}

void jpeg_on_message(j_common_ptr, int) {}  // warnings and trace output: libjpeg recovers

// Empty when libjpeg decodes every scanline of the file, else libjpeg's error message.
std::string jpeg_problem(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return {};  // unreadable: ITK reports it with its own message
  jpeg_decompress_struct info;
  JpegErrorContext context;
  info.err = jpeg_std_error(&context.manager);
  context.manager.error_exit = jpeg_on_error;
  context.manager.emit_message = jpeg_on_message;
  JSAMPARRAY volatile rows = nullptr;
  if (setjmp(context.jump)) {
    jpeg_destroy_decompress(&info);
    std::fclose(file);
    return context.message;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  // libjpeg pads a short file with grey rows: a 1 KB file could make it decode 65500^2 pixels.
  if (claims_too_much(path, uint64_t{info.image_width} * info.image_height * info.num_components)) {
    std::snprintf(context.message, sizeof context.message, "%s",
                  "header claims more image data than the file can hold");
    std::longjmp(context.jump, 1);
  }
  jpeg_start_decompress(&info);
  // Memory from libjpeg's pool: released by jpeg_destroy_decompress, also after an error.
  rows = (*info.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&info), JPOOL_IMAGE,
                                   info.output_width * info.output_components, 1);
  while (info.output_scanline < info.output_height) jpeg_read_scanlines(&info, rows, 1);
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  std::fclose(file);
  return {};
}

void check_jpeg(const std::string& path) {
  const std::string problem = jpeg_problem(path);
  if (!problem.empty())
    SEGICL_THROW(IoError, "not a readable JPEG file (" + shorten(problem) + ")", path, kCorruptHint);
}

// ---- BMP header ----
// ITK 5.2's BMP reader trusts the header: its RLE8 decoder writes past the image buffer when the
// runs describe more pixels than the image has (fuzz_image2d: a SEGV in itk::BMPImageIO::Read, and
// heap corruption that surfaced later in unrelated frees), and it reads pixel rows the file may
// not hold. So the header is checked first: uncompressed pixels only (RLE and bit-field BMPs are
// refused with a hint to convert them), sane sizes, and every row inside the file.
void check_bmp(const std::string& path) {
  const std::string bytes = read_file(path);
  auto fail = [&](const std::string& what, const std::string& hint = kCorruptHint) {
    SEGICL_THROW(IoError, "not a readable BMP file (" + what + ")", path, hint);
  };
  auto get = [&](uint64_t at, int size) -> int64_t {
    const std::optional<uint64_t> value = read_uint(bytes, at, size, /*little=*/true);
    if (!value) fail("its header is cut short");
    // 4-byte fields are signed (a negative height means top-down rows).
    return size == 4 ? static_cast<int32_t>(*value) : static_cast<int64_t>(*value);
  };
  if (bytes.size() < 26 || bytes.compare(0, 2, "BM") != 0) fail("no BM signature");
  const int64_t pixels_at = static_cast<uint32_t>(get(10, 4)), info_size = static_cast<uint32_t>(get(14, 4));
  const bool os2 = info_size == 12;  // BITMAPCOREHEADER: 16-bit sizes, no compression field
  if (!os2 && info_size < 40) fail("unknown info header size " + std::to_string(info_size));
  const int64_t width = os2 ? get(18, 2) : get(18, 4);
  const int64_t height = std::abs(os2 ? get(20, 2) : get(22, 4));
  const int64_t planes = os2 ? get(22, 2) : get(26, 2), bits = os2 ? get(24, 2) : get(28, 2);
  const int64_t compression = os2 ? 0 : get(30, 4);
  if (width < 1 || width > 65535 || height < 1 || height > 65535)
    fail("image size " + std::to_string(width) + " x " + std::to_string(height) + " out of range");
  if (planes != 1) fail(std::to_string(planes) + " planes");
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
    fail(std::to_string(bits) + " bits per pixel");
  if (compression != 0)
    fail("compression " + std::to_string(compression) + "; only uncompressed BMP is read",
         "convert it to an uncompressed BMP or to PNG");
  const int64_t row_bytes = (width * bits + 31) / 32 * 4;
  if (pixels_at < 14 + info_size || pixels_at > static_cast<int64_t>(bytes.size()) ||
      static_cast<int64_t>(bytes.size()) - pixels_at < row_bytes * height)
    fail("the file holds fewer pixel rows than its header says");
}

// ---- TIFF directory chain ----
// Bytes per value of a TIFF field type (TIFF 6.0 section 2; BigTIFF adds 16-18), 0 if unknown.
int tiff_type_size(uint64_t type, bool big) {
  switch (type) {
    case 1: case 2: case 6: case 7: return 1;     // BYTE ASCII SBYTE UNDEFINED
    case 3: case 8: return 2;                     // SHORT SSHORT
    case 4: case 9: case 11: case 13: return 4;   // LONG SLONG FLOAT IFD
    case 5: case 10: case 12: return 8;           // RATIONAL SRATIONAL DOUBLE
    case 16: case 17: case 18: return big ? 8 : 0;  // LONG8 SLONG8 IFD8
    default: return 0;
  }
}

// The types (one char per type code) a baseline or common extension tag may be stored as; empty
// for tags not listed. Integer tags take SHORT or LONG (libtiff converts), offsets and counts
// also LONG8 in BigTIFF; text tags take ASCII only.
std::string tiff_expected_types(uint64_t tag) {
  static const std::string shorts{3}, integers{3, 4}, offsets{3, 4, 16}, longs{4}, rational{5}, ascii{2};
  switch (tag) {
    case 254: return longs;                                     // NewSubfileType
    case 255: case 258: case 259: case 262: case 263: case 266:  // SubfileType .. FillOrder
    case 274: case 277: case 284: case 296: case 297: case 317:  // Orientation .. Predictor
    case 320: case 338: case 339: return shorts;                // ColorMap ExtraSamples SampleFormat
    case 256: case 257: case 278: case 322: case 323: return integers;  // sizes, RowsPerStrip, tiles
    case 273: case 279: case 324: case 325: return offsets;     // strip and tile offsets/counts
    case 282: case 283: return rational;                        // X/YResolution
    case 269: case 270: case 271: case 272: case 285: case 305:  // DocumentName .. Software
    case 306: case 315: case 316: case 33432: return ascii;     // DateTime .. Copyright
    default: return "";
  }
}

// ITK 5.2's bundled libtiff loops forever on a directory chain that points back into itself
// (itk_TIFFNumberOfDirectories, found by fuzz_image2d): one upload would hold a server worker
// for good. So the chain of image file directories (IFDs) is walked here first: every offset
// must lie inside the file and none may repeat. Classic TIFF and BigTIFF.
void check_tiff_directories(const std::string& path) {
  const std::string bytes = read_file(path);
  auto fail = [&](const std::string& what) {
    SEGICL_THROW(IoError, "not a readable TIFF file (" + what + ")", path, kCorruptHint);
  };
  if (bytes.size() < 8) fail("too short");
  const bool little = bytes[0] == 'I' && bytes[1] == 'I';
  if (!little && !(bytes[0] == 'M' && bytes[1] == 'M')) fail("no byte-order mark");
  auto get = [&](uint64_t at, int size) -> uint64_t {
    const std::optional<uint64_t> value = read_uint(bytes, at, size, little);
    if (!value) fail("a directory points past the end");
    return *value;
  };
  const uint64_t version = get(2, 2);
  if (version != 42 && version != 43) fail("unknown version " + std::to_string(version));
  const bool big = version == 43;
  // One directory entry: tag, type, count, then the value itself when it fits in the entry's
  // last 4 (BigTIFF: 8) bytes, else its offset. ITK's tag reader copies what libtiff made of
  // each entry into its metadata dictionary by the tag's *expected* type and count, so an entry
  // of an unknown type, a value reaching past the end of the file, or a baseline tag stored with
  // another type than TIFF 6.0 gives it (section 8; libtiff's own tag table) overflowed ITK's
  // buffers (fuzz_image2d). Such entries are refused here.
  // The first value of the layout tags of the directory being walked: ITK reads every page of a
  // multi-page TIFF with the first page's layout (a page without a width made it copy past its
  // scanline buffer: fuzz_image2d), so all pages must agree on it.
  const uint64_t layout_tags[] = {256, 257, 258, 277, 284, 339};  // width .. SampleFormat
  std::map<uint64_t, uint64_t> layout;
  std::set<uint64_t> page_tags;
  auto check_tiff_entry = [&](uint64_t at) {
    const uint64_t tag = get(at, 2), type = get(at + 2, 2), count = big ? get(at + 4, 8) : get(at + 4, 4);
    const std::string name = "tag " + std::to_string(tag);
    // libtiff keeps the first of two equal tags; a second ImageWidth must not hide a huge first one.
    if (!page_tags.insert(tag).second) fail(name + " appears twice in one directory");
    const int size = tiff_type_size(type, big);
    if (size == 0) fail(name + " has the unknown type " + std::to_string(type));
    if (count > bytes.size()) fail(name + " has more values than the file has bytes");
    const uint64_t value_bytes = count * static_cast<uint64_t>(size);
    const uint64_t inline_bytes = big ? 8 : 4;
    uint64_t value_at = big ? at + 12 : at + 8;
    if (value_bytes > inline_bytes) {
      value_at = big ? get(at + 12, 8) : get(at + 8, 4);
      if (value_at > bytes.size() || bytes.size() - value_at < value_bytes) fail(name + "'s values reach past the end of the file");
    }
    // Text ends with its NUL inside the count (TIFF 6.0 section 2): ITK measures it with strlen.
    if (type == 2 && (count == 0 || get(value_at + count - 1, 1) != 0)) fail(name + "'s text has no terminating NUL");
    const std::string expected = tiff_expected_types(tag);
    if (!expected.empty() && expected.find(static_cast<char>(type)) == std::string::npos)
      fail(name + " is stored as type " + std::to_string(type) + ", which TIFF does not allow for it");
    if (std::find(std::begin(layout_tags), std::end(layout_tags), tag) != std::end(layout_tags)) {
      if (count == 0) fail(name + " has no value");
      layout[tag] = get(value_at, size);
    }
  };
  std::map<uint64_t, uint64_t> first_layout;
  std::set<uint64_t> seen;
  for (uint64_t ifd = big ? get(8, 8) : get(4, 4); ifd != 0;) {
    if (!seen.insert(ifd).second) fail("its directory chain loops");
    if (seen.size() > 65536) fail("more than 65536 directories");
    const uint64_t entries = big ? get(ifd, 8) : get(ifd, 2);
    if (entries > bytes.size()) fail("a directory has more entries than the file has bytes");
    const uint64_t first = big ? ifd + 8 : ifd + 2, entry_size = big ? 20 : 12;
    page_tags.clear();
    layout = {{258, 1}, {277, 1}, {284, 1}, {339, 1}};  // TIFF defaults: 1 bit, 1 sample, contiguous, unsigned
    for (uint64_t e = 0; e < entries; ++e) check_tiff_entry(first + e * entry_size);
    if (!layout.count(256) || !layout.count(257)) fail("a page has no ImageWidth or ImageLength");
    // Pixels are in strips or in tiles, never both (libtiff leaked its offset arrays on a page
    // with both: fuzz_image2d, LeakSanitizer), and a tiled page names all four tile tags.
    const bool strips = page_tags.count(273) || page_tags.count(279);
    const int tile_tags = page_tags.count(322) + page_tags.count(323) + page_tags.count(324) + page_tags.count(325);
    if (strips && tile_tags > 0) fail("a page has both strip and tile tags");
    if (!strips && tile_tags != 4) fail("a page has neither StripOffsets nor all four tile tags");
    // libtiff sizes its strip tables from these while it opens the file, before ITK can check the
    // image size (fuzz_image2d: a 230-byte file with ImageLength 3.5e9 asked for 3.5 GB).
    const uint64_t width = layout[256], length = layout[257], samples = layout[277], bits = layout[258];
    if (width < 1 || width > (1u << 24) || length < 1 || length > (1u << 24) || samples < 1 || samples > 64 ||
        bits < 1 || bits > 64)
      fail("page size " + std::to_string(width) + " x " + std::to_string(length) + ", " + std::to_string(samples) +
           " samples of " + std::to_string(bits) + " bits, out of range");
    if ((width * samples * bits + 7) / 8 * length > kMaxInflation * bytes.size())
      fail("a page claims more pixel data than the file can hold");
    if (first_layout.empty()) {
      first_layout = layout;
    } else if (layout != first_layout) {
      SEGICL_THROW(IoError,
                   "its pages differ in size or pixel layout (page " + std::to_string(seen.size()) + ")", path,
                   "segicl reads a multi-page TIFF as a volume of equal pages; save each page as its own file");
    }
    const uint64_t next = first + entries * entry_size;
    ifd = big ? get(next, 8) : get(next, 4);
  }
}

// ---- Compressed data ----
// Inflates a gzip or zlib stream (`data`, `size` bytes) without keeping its output and refuses it
// unless it runs to its end and yields at least the `claimed` bytes. ITK's readers do worse on the
// same streams: NrrdIO leaks (below), and MetaIO zero-fills a short stream's tail and loops
// forever on a zlib header asking for a preset dictionary (inflate's Z_NEED_DICT, found by
// fuzz_meta). A stream running far past the claim is refused without inflating it all.
void check_deflated_data(const std::string& path, const std::string& what, const char* data,
                         size_t size, uint64_t claimed) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 32) != Z_OK)  // 15 + 32: gzip or zlib header
    SEGICL_THROW(IoError, "cannot start zlib", path, "");
  size_t fed = 0;  // zlib takes at most 4 GiB of input per call
  std::vector<unsigned char> chunk(1 << 16);
  uint64_t produced = 0;
  int status = Z_OK;
  // To the end of the stream: its checksum comes last, and a bad one leaks in NrrdIO as well.
  while (status == Z_OK && produced <= claimed + chunk.size()) {
    if (stream.avail_in == 0 && fed < size) {
      stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data + fed));
      stream.avail_in = static_cast<uInt>(std::min<size_t>(size - fed, size_t{1} << 30));
      fed += stream.avail_in;
    }
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    status = inflate(&stream, Z_NO_FLUSH);
    produced += chunk.size() - stream.avail_out;
  }
  inflateEnd(&stream);
  if (produced < claimed || status != Z_STREAM_END) {
    const char* why = status == Z_DATA_ERROR  ? " (corrupt stream)"
                      : status == Z_NEED_DICT ? " (the stream asks for a preset dictionary)"
                      : status != Z_STREAM_END ? " (no stream end)"
                                               : "";
    SEGICL_THROW(IoError,
                 what + " yields " + std::to_string(produced) + " bytes for the " +
                     std::to_string(claimed) + " its header claims" + why,
                 path, kCorruptHint);
  }
}

// ---- NRRD data ----
// ITK 5.2's NrrdIO leaks its gzip stream and buffers (about 60 KB) whenever gzip data fails to
// decompress or runs short, and its image struct when raw data runs short (found by fuzz_meta):
// a server fed such files would grow without bound. So raw data must be there in full, and
// gzip-encoded data is inflated here first and must yield the `claimed` bytes.
std::optional<std::string> header_field(const std::string& path, const std::string& key,
                                        char separator, bool ignore_case);

void check_nrrd_data(const std::string& path, uint64_t claimed) {
  auto encoding = header_field(path, "encoding", ':', true);
  if (!encoding) return;
  std::transform(encoding->begin(), encoding->end(), encoding->begin(),  // NrrdIO ignores case
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string bytes = read_file(path);
  size_t start = bytes.find("\n\n");
  if (start == std::string::npos) return;  // no data: NrrdIO refuses it
  start += 2;
  // Raw data shorter than claimed leaks NrrdIO's image struct too (fuzz_meta).
  if (*encoding == "raw" && bytes.size() - start < claimed) {
    SEGICL_THROW(IoError,
                 "file ends after " + std::to_string(bytes.size() - start) + " of " +
                     std::to_string(claimed) + " data bytes",
                 path, kCorruptHint);
  }
  if (*encoding != "gzip" && *encoding != "gz") return;
  check_deflated_data(path, "gzip data", bytes.data() + start, bytes.size() - start, claimed);
}

// ---- The reader for an extension ----
// ITK's factory picks a reader by content, so a PNG named .nii went to the PNG reader (found by
// fuzz_nifti) and a DICOM file named .png would go to GDCM. The extension decides the format here,
// as the server's API promises: one reader per extension, and content it cannot read is an error.
itk::ImageIOBase::Pointer reader_for(const std::string& ext) {
  if (ext == ".png") return itk::PNGImageIO::New().GetPointer();
  if (ext == ".jpg" || ext == ".jpeg") return itk::JPEGImageIO::New().GetPointer();
  if (ext == ".bmp") return itk::BMPImageIO::New().GetPointer();
  if (ext == ".tif" || ext == ".tiff") return itk::TIFFImageIO::New().GetPointer();
  if (ext == ".nii" || ext == ".nii.gz") return itk::NiftiImageIO::New().GetPointer();
  if (ext == ".mha" || ext == ".mhd") return itk::MetaImageIO::New().GetPointer();
  if (ext == ".nrrd" || ext == ".nhdr") return itk::NrrdImageIO::New().GetPointer();
  if (ext == ".dcm") return itk::GDCMImageIO::New().GetPointer();
  return nullptr;
}

// ---- Single-file MetaImage and NRRD ----
// A .mha or .nrrd names its data file in its header (MetaImage `ElementDataFile`, NRRD
// `data file:`). Through an upload that would make the server read any path it can open
// (/dev/zero, /dev/stdin, another user's volume), and fuzz_meta found MetaIO leaking on such
// headers. The detached forms have their own extensions (.mhd, .nhdr), so the single-file ones
// must hold their data.

// The first `key` (followed by `separator`) in the header's first 64 KiB and the trimmed rest of
// its line, or nullopt when the key is not there. NRRD (ignore_case) headers end at a blank line.
std::optional<std::string> header_field(const std::string& path, const std::string& key,
                                        char separator, bool ignore_case) {
  std::ifstream in(path, std::ios::binary);
  std::string head(64 * 1024, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (ignore_case) head = head.substr(0, head.find("\n\n"));
  std::string haystack = head, needle = key;
  if (ignore_case) {
    for (auto* text : {&haystack, &needle})
      std::transform(text->begin(), text->end(), text->begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    size_t value = at + needle.size();
    while (value < head.size() && (head[value] == ' ' || head[value] == '\t')) ++value;
    if (value >= head.size() || head[value] != separator) continue;
    // A line ends at a NUL too, as the C readers behind ITK see it: "encoding: gzip\0..." is
    // gzip to NrrdIO (fuzz_meta found it leaking past the gzip check below).
    const size_t eol = std::min({head.find('\n', value), head.find('\0', value), head.size()});
    std::string text = head.substr(value + 1, eol - value - 1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(0, 1);
    return text;
  }
  return std::nullopt;
}

// MetaIO trusts its header: a key longer than its 255-byte field overflowed it (strcpy), NDims =
// -10 made it loop for good, a repeated or malformed NDims/DimSize/ElementType let it write past
// the buffer ITK had sized from the header (heap corruption under fuzz_meta). So the header is
// checked here first, as MetaIO's own writer and ITK's write it: `Key = Value` lines up to
// `ElementDataFile`, each key once, NDims before the per-axis keys, which then hold exactly NDims
// (matrices NDims^2) finite numbers. Unknown keys (ITK writes its metadata dictionary as keys)
// are allowed with short values.
void check_meta_header(const std::string& path) {
  auto corrupt = [&](const std::string& what) {
    SEGICL_THROW(IoError, "MetaImage header: " + what, path, kCorruptHint);
  };
  std::ifstream in(path, std::ios::binary);
  std::string line;
  std::set<std::string> seen;
  int dims = 0;
  auto numbers = [&](const std::string& key, const std::string& value, size_t count, bool integers) {
    std::istringstream values(value);
    std::vector<double> parsed;
    std::string word;
    while (values >> word) {
      char* end = nullptr;
      const double number = std::strtod(word.c_str(), &end);
      if (end != word.c_str() + word.size() || !std::isfinite(number)) corrupt(key + " holds '" + shorten(word) + "'");
      if (integers && (number != std::floor(number) || number < 1 || number > 1e9)) {
        corrupt(key + " must hold positive integers");
      }
      parsed.push_back(number);
    }
    if (parsed.size() != count) {
      corrupt(key + " holds " + std::to_string(parsed.size()) + " values, NDims = " + std::to_string(dims) +
              " asks for " + std::to_string(count));
    }
  };
  static const std::set<std::string> kPerAxis = {"DimSize", "ElementSpacing", "ElementSize", "Offset",
                                                 "Position", "Origin", "CenterOfRotation"};
  static const std::set<std::string> kMatrices = {"TransformMatrix", "Rotation", "Orientation"};
  static const std::set<std::string> kBooleans = {"BinaryData", "CompressedData", "BinaryDataByteOrderMSB",
                                                  "ElementByteOrderMSB"};
  static const std::set<std::string> kElementTypes = {
      "MET_UCHAR", "MET_CHAR", "MET_USHORT", "MET_SHORT",     "MET_UINT",      "MET_INT",
      "MET_FLOAT", "MET_DOUBLE", "MET_LONG", "MET_ULONG", "MET_LONG_LONG", "MET_ULONG_LONG"};
  for (int lines = 0; std::getline(in, line); ++lines) {
    if (lines >= 200) corrupt("more than 200 header lines before ElementDataFile");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t eq = line.find('=');
    if (eq == std::string::npos) corrupt("line " + std::to_string(lines + 1) + " is not 'Key = Value'");
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    key.erase(key.find_last_not_of(" \t") + 1);
    key.erase(0, std::min(key.size(), key.find_first_not_of(" \t")));
    value.erase(0, std::min(value.size(), value.find_first_not_of(" \t")));
    value.erase(value.find_last_not_of(" \t") + 1);
    const bool key_ok = !key.empty() && key.size() <= 64 && std::all_of(key.begin(), key.end(), [](unsigned char c) {
      return std::isalnum(c) || c == '_';
    });
    if (!key_ok) corrupt("line " + std::to_string(lines + 1) + " has no valid key");
    if (value.size() > 200 ||
        !std::all_of(value.begin(), value.end(), [](unsigned char c) { return c == '\t' || (c >= 32 && c < 127); })) {
      corrupt(key + " has a value MetaIO cannot hold");
    }
    if (!seen.insert(key).second) corrupt(key + " appears twice");
    if (key == "ElementDataFile") {
      if (!seen.count("DimSize")) corrupt("no DimSize before ElementDataFile");
      if (!seen.count("ElementType")) corrupt("no ElementType before ElementDataFile");
      return;
    }
    if (key == "NDims") {
      std::istringstream text(value);
      std::string rest;
      if (!(text >> dims) || dims < 1 || dims > 10 || (text >> rest)) corrupt("NDims must be 1 to 10");
    } else if (kPerAxis.count(key) || kMatrices.count(key)) {
      if (dims == 0) corrupt(key + " comes before NDims");
      numbers(key, value, kMatrices.count(key) ? static_cast<size_t>(dims * dims) : static_cast<size_t>(dims),
              key == "DimSize");
    } else if (kBooleans.count(key)) {
      if (value != "True" && value != "False") corrupt(key + " must be True or False");
    } else if (key == "ElementType") {
      if (!kElementTypes.count(value)) corrupt("unknown ElementType '" + shorten(value) + "'");
    } else if (key == "ElementNumberOfChannels") {
      numbers(key, value, 1, true);
    }
  }
  corrupt("no ElementDataFile line");
}

void check_data_is_local(const std::string& path, const std::string& ext) {
  if (ext == ".mha" || ext == ".mhd") check_meta_header(path);
  if (ext == ".mha") {
    const auto file = header_field(path, "ElementDataFile", '=', false);
    std::string lower = file.value_or("local");
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower != "local") {
      SEGICL_THROW(IoError,
                   "this .mha file does not hold its data (ElementDataFile = " + shorten(*file) + ")",
                   path, "a header with a separate data file is a .mhd; rename it or re-export as .mha");
    }
  } else if (ext == ".nrrd") {
    for (const char* key : {"data file", "datafile"}) {
      if (const auto file = header_field(path, key, ':', true)) {
        SEGICL_THROW(IoError, "this .nrrd file does not hold its data (data file: " + shorten(*file) + ")",
                     path, "a header with a separate data file is a .nhdr; rename it or re-export as .nrrd");
      }
    }
  }
}

// Where a single-file .mha's compressed data lies in the file.
struct CompressedSpan {
  int64_t offset = 0;
  int64_t size = 0;
};

// ITK's MetaIO returns a zero-filled tail for a truncated .mha (compressed or not), as nifti1_io
// does, so compare the bytes after the header with what the header promises. Only single-file .mha
// with ElementDataFile = LOCAL is checked; anything unusual is left to ITK. Returns where its
// compressed data lies, if it has any.
std::optional<CompressedSpan> check_mha_length(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  auto trim = [](std::string& t) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.erase(0, 1);
  };
  static const std::pair<const char*, int> kElementSizes[] = {
      {"MET_UCHAR", 1},     {"MET_CHAR", 1},      {"MET_USHORT", 2}, {"MET_SHORT", 2},
      {"MET_UINT", 4},      {"MET_INT", 4},       {"MET_FLOAT", 4},  {"MET_DOUBLE", 8},
      {"MET_LONG_LONG", 8}, {"MET_ULONG_LONG", 8}};
  std::string line;
  int64_t compressed = -1, channels = 1, element = 0, voxels = 1;
  bool compressed_data = false, local = false;
  for (int lines = 0; lines < 200 && std::getline(in, line); ++lines) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos) return std::nullopt;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    trim(key);
    trim(value);
    std::istringstream values(value);
    if (key == "DimSize") {
      int64_t n;
      while (values >> n) {
        // Overflow-checked: a fuzzed DimSize overflowed int64 here.
        if (n <= 0 || __builtin_mul_overflow(voxels, n, &voxels) || voxels > kMaxDataBytes) {
          return std::nullopt;
        }
      }
    } else if (key == "CompressedData") {
      compressed_data = value == "True";
    } else if (key == "CompressedDataSize") {
      // MetaIO allocates this many bytes as given: -10 asked new[] for 2^64 - 10 (fuzz_meta).
      if (!(values >> compressed) || compressed <= 0) {
        SEGICL_THROW(IoError, "MetaImage header has an invalid CompressedDataSize", path, kCorruptHint);
      }
    } else if (key == "ElementNumberOfChannels") {
      values >> channels;
    } else if (key == "ElementType") {
      for (const auto& [name, size] : kElementSizes) {
        if (value == name) element = size;
      }
    } else if (key == "ElementDataFile") {
      local = value == "LOCAL";
      break;
    }
  }
  if (!local || !in) return std::nullopt;
  const int64_t header_end = static_cast<int64_t>(in.tellg());
  std::error_code ec;
  const int64_t available = static_cast<int64_t>(fs::file_size(path, ec)) - header_end;
  if (ec) return std::nullopt;
  int64_t expected = -1;
  if (compressed_data) {
    expected = compressed;
  } else if (element > 0 && channels > 0 && channels <= 64) {
    expected = voxels * channels * element;  // voxels <= 2^40: cannot overflow
  }
  if (expected > 0 && available < expected) {
    SEGICL_THROW(IoError,
                 "file ends after " + std::to_string(available) + " of " +
                     std::to_string(expected) + " data bytes",
                 path, kCorruptHint);
  }
  // MetaIO inflates exactly CompressedDataSize bytes (the rest of the file without it).
  if (compressed_data) return CompressedSpan{header_end, compressed > 0 ? compressed : available};
  return std::nullopt;
}

// Inflated once here after ITK read the header (so `claimed` is the header's size, already
// checked against the file's): see check_deflated_data for what MetaIO does otherwise.
void check_mha_compressed_data(const std::string& path, const CompressedSpan& span,
                               uint64_t claimed) {
  std::ifstream in(path, std::ios::binary);
  std::string data(static_cast<size_t>(span.size), '\0');
  in.seekg(span.offset);
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  check_deflated_data(path, "compressed data", data.data(), static_cast<size_t>(in.gcount()),
                      claimed);
}

// What the reader found before conversion to float.
struct Decoded {
  Volume volume;
  bool float_type = false;  // stored as float/double (labels must then be checked for fractions)
  int stored_components = 1;
  int64_t nonfinite_in_file = 0;  // NaN/Inf the format's reader zeroed (NIfTI)
};

void check_size(const std::string& path, const std::vector<size_t>& size) {
  for (size_t s : size) {
    if (s == 0) {
      SEGICL_THROW(DataError, "image has zero size along one axis", path,
                   "the file holds no voxels; re-export it");
    }
  }
}

void check_dimensions(const std::string& path, itk::ImageIOBase* io) {
  unsigned dims = io->GetNumberOfDimensions();
  std::vector<size_t> size;
  for (unsigned d = 0; d < dims; ++d) size.push_back(io->GetDimensions(d));
  check_size(path, size);
  if (dims < 2) {
    SEGICL_THROW(DataError, "1D image; segicl segments 2D or 3D images", path,
                 "store the data as a 2D or 3D image");
  }
  for (unsigned d = 3; d < dims; ++d) {
    if (size[d] > 1) {
      size_t points = 1;
      for (unsigned k = 3; k < dims; ++k) points *= size[k];
      SEGICL_THROW(DataError,
                   std::to_string(dims) + "D image (" + std::to_string(points) +
                       " time points); segicl segments 2D or 3D images",
                   path,
                   "split the series into one 3D file per time point (e.g. fslsplit or "
                   "nibabel's four_to_three) and pass those");
    }
  }
}

// A header's claimed size must fit what the file can hold (kMaxInflation), checked before ITK
// allocates the image. Skipped for .mhd/.nhdr, whose data lives in another file.
// Returns the claimed bytes (0 when not checked).
uint64_t check_claimed_size(const std::string& path, const std::string& ext, itk::ImageIOBase* io) {
  if (ext == ".mhd" || ext == ".nhdr") return 0;
  uint64_t claimed = io->GetComponentSize() * std::max<uint64_t>(1, io->GetNumberOfComponents());
  for (unsigned d = 0; d < io->GetNumberOfDimensions(); ++d) {
    if (__builtin_mul_overflow(claimed, static_cast<uint64_t>(io->GetDimensions(d)), &claimed) ||
        claimed > static_cast<uint64_t>(kMaxDataBytes)) {
      SEGICL_THROW(IoError, "header claims an implausible image size (over 2^40 bytes)", path,
                   kCorruptHint);
    }
  }
  if (claims_too_much(path, claimed)) {
    SEGICL_THROW(IoError,
                 "header claims " + std::to_string(claimed) + " bytes of image data, more than the " +
                     std::to_string(fs::file_size(path)) + "-byte file can hold",
                 path, kCorruptHint);
  }
  return claimed;
}

// Keeps 1 (grey) or 3 (RGB) channels; drops alpha from grey+alpha and RGBA.
int kept_channels(const std::string& path, int components) {
  switch (components) {
    case 1:
    case 2:
      return 1;
    case 3:
    case 4:
      return 3;
    default:
      SEGICL_THROW(DataError,
                   "image has " + std::to_string(components) +
                       " components per voxel; only grey and RGB(A) are supported",
                   path, "convert it to a single-channel or RGB image");
  }
}

void copy_geometry(const ReadImage* image, int dims, Volume& out) {
  const auto& spacing = image->GetSpacing();
  const auto& origin = image->GetOrigin();
  const auto& direction = image->GetDirection();
  const auto& size = image->GetLargestPossibleRegion().GetSize();
  for (int i = 0; i < 3; ++i) {
    out.size[i] = static_cast<int64_t>(size[i]);
    out.geometry.spacing[i] = spacing[i];
    out.geometry.origin[i] = origin[i];
    for (int j = 0; j < 3; ++j) out.geometry.direction[i * 3 + j] = direction(i, j);
  }
  out.dims = dims;
}

void copy_pixels(const ReadImage* image, int stored, int kept, Volume& out) {
  const float* buffer = image->GetBufferPointer();
  const size_t voxels = static_cast<size_t>(out.num_voxels());
  out.channels = kept;
  out.voxels.resize(voxels * kept);
  if (stored == kept) {
    std::copy(buffer, buffer + voxels * kept, out.voxels.begin());
    return;
  }
  for (size_t v = 0; v < voxels; ++v) {
    for (int c = 0; c < kept; ++c) out.voxels[v * kept + c] = buffer[v * stored + c];
  }
}

Decoded read_dicom_directory(const std::string& path) {
  return translate_itk(path, "cannot read DICOM series", kCorruptHint, [&] {
    auto names = itk::GDCMSeriesFileNames::New();
    names->SetUseSeriesDetails(true);
    names->SetDirectory(path);
    std::vector<std::string> series = names->GetSeriesUIDs();
    if (series.empty()) {
      SEGICL_THROW(
          IoError, "directory holds no DICOM series", path,
          std::string("pass a DICOM series directory or one image file (") + kReadExtensions + ")");
    }
    if (series.size() > 1) {
      SEGICL_THROW(IoError,
                   "directory holds " + std::to_string(series.size()) +
                       " DICOM series; expected exactly one",
                   path, "move each series into its own directory and pass one of them");
    }
    std::vector<std::string> files = names->GetFileNames(series.front());
    auto dicom = itk::GDCMImageIO::New();
    auto reader = itk::ImageSeriesReader<ReadImage>::New();
    reader->SetImageIO(dicom);
    reader->SetFileNames(files);
    reader->Update();
    ReadImage* image = reader->GetOutput();
    int stored = static_cast<int>(image->GetNumberOfComponentsPerPixel());
    Decoded decoded;
    decoded.stored_components = stored;
    decoded.float_type = false;
    copy_geometry(image, 3, decoded.volume);
    check_size(path, {static_cast<size_t>(decoded.volume.size[0]),
                      static_cast<size_t>(decoded.volume.size[1]),
                      static_cast<size_t>(decoded.volume.size[2])});
    copy_pixels(image, stored, kept_channels(path, stored), decoded.volume);
    return decoded;
  });
}

// Reads any supported file or DICOM directory into float voxels, channels trimmed to 1 or 3.
Decoded decode(const std::string& path, bool expand_palette) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    SEGICL_THROW(IoError, "file not found", path, "check the path");
  }
  if (fs::is_directory(path, ec)) return read_dicom_directory(path);

  const std::string ext = extension_of(path);
  const Format format = format_of(ext);
  if (format == Format::kUnknown) {
    SEGICL_THROW(IoError, "unknown image extension '" + ext + "'; supported: " + kReadExtensions,
                 path, "convert the file to NIfTI (.nii.gz) or PNG");
  }

  const NiftiScan scan = format == Format::kNifti ? scan_nifti(path) : NiftiScan{};
  check_data_is_local(path, ext);
  if (ext == ".png") check_png(path);
  if (ext == ".jpg" || ext == ".jpeg") check_jpeg(path);
  if (ext == ".bmp") check_bmp(path);
  if (ext == ".tif" || ext == ".tiff") check_tiff_directories(path);
  const auto mha_compressed = ext == ".mha" ? check_mha_length(path) : std::nullopt;
  return translate_itk(path, "cannot read image", kCorruptHint, [&] {
    itk::ImageIOBase::Pointer io = reader_for(ext);
    if (!io || !io->CanReadFile(path.c_str())) {
      SEGICL_THROW(IoError, "not a readable " + ext + " file (no reader recognises its content)",
                   path, kCorruptHint);
    }
    io->SetFileName(path);
    io->SetExpandRGBPalette(expand_palette);
    io->ReadImageInformation();
    check_dimensions(path, io);
    const uint64_t claimed = check_claimed_size(path, ext, io);
    if (ext == ".nrrd") check_nrrd_data(path, claimed);
    if (mha_compressed) check_mha_compressed_data(path, *mha_compressed, claimed);

    const int stored = static_cast<int>(io->GetNumberOfComponents());
    const int kept = kept_channels(path, stored);
    const auto component = io->GetComponentType();
    const bool is_float =
        component == itk::IOComponentEnum::FLOAT || component == itk::IOComponentEnum::DOUBLE;
    const int dims = std::min<int>(3, static_cast<int>(io->GetNumberOfDimensions()));

    auto reader = itk::ImageFileReader<ReadImage>::New();
    reader->SetImageIO(io);
    reader->SetFileName(path);
    reader->Update();
    ReadImage* image = reader->GetOutput();

    Decoded decoded;
    decoded.float_type = is_float;
    decoded.stored_components = stored;
    decoded.nonfinite_in_file = scan.nonfinite;
    copy_geometry(image, dims, decoded.volume);
    // ITK reports a 2D file as a 3D image with one slice; identity beyond the 2x2 block.
    if (dims == 2) {
      decoded.volume.size[2] = 1;
      decoded.volume.geometry.spacing[2] = 1.0;
      decoded.volume.geometry.origin[2] = 0.0;
    }
    decoded.volume.geometry.spacing_known = format != Format::kPlanar;
    const int got = static_cast<int>(image->GetNumberOfComponentsPerPixel());
    if (got != stored) {
      SEGICL_THROW(IoError,
                   "reader returned " + std::to_string(got) + " components, header said " +
                       std::to_string(stored),
                   path, kCorruptHint);
    }
    copy_pixels(image, stored, kept, decoded.volume);
    return decoded;
  });
}

// ---- writing ----

template <typename Pixel, unsigned Dim>
typename itk::Image<Pixel, Dim>::Pointer make_image(const std::array<int64_t, 3>& size,
                                                    const Geometry& geometry) {
  using Image = itk::Image<Pixel, Dim>;
  auto image = Image::New();
  typename Image::RegionType region;
  typename Image::SpacingType spacing;
  typename Image::PointType origin;
  typename Image::DirectionType direction;
  for (unsigned i = 0; i < Dim; ++i) {
    region.SetSize(i, static_cast<itk::SizeValueType>(size[i]));
    spacing[i] = geometry.spacing[i];
    origin[i] = geometry.origin[i];
    for (unsigned j = 0; j < Dim; ++j) direction(i, j) = geometry.direction[i * 3 + j];
  }
  image->SetRegions(region);
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->Allocate();
  return image;
}

template <typename ImageType>
void write_with_itk(typename ImageType::Pointer image, const std::string& path, bool compress) {
  publish_atomic(path, [&](const std::string& tmp) {
    translate_itk(path, "cannot write image",
                  "check that the folder exists, is writable and has "
                  "free space",
                  [&] {
                    auto writer = itk::ImageFileWriter<ImageType>::New();
                    writer->SetFileName(tmp);
                    writer->SetInput(image);
                    writer->SetUseCompression(compress);
                    writer->Update();
                  });
  });
}

Format check_writable(const std::string& path, const std::array<int64_t, 3>& size, int dims,
                      size_t values, size_t expected_values) {
  const std::string ext = extension_of(path);
  const Format format = format_of(ext);
  const bool supported =
      ext == ".nii" || ext == ".nii.gz" || ext == ".mha" || ext == ".nrrd" || ext == ".png";
  if (!supported) {
    SEGICL_THROW(IoError, "cannot write '" + ext + "' files; supported: " + kWriteExtensions, path,
                 "choose an output name ending in .nii.gz");
  }
  if (dims != 2 && dims != 3) {
    SEGICL_THROW(DataError, "dims must be 2 or 3, got " + std::to_string(dims), path, "");
  }
  if (size[0] <= 0 || size[1] <= 0 || size[2] <= 0) {
    SEGICL_THROW(DataError, "cannot write an empty grid", path, "");
  }
  if (dims == 2 && size[2] != 1) {
    SEGICL_THROW(DataError, "2D data must have size[2] == 1", path, "");
  }
  if (values != expected_values) {
    SEGICL_THROW(DataError,
                 "buffer holds " + std::to_string(values) + " values, the grid needs " +
                     std::to_string(expected_values),
                 path, "fill the voxel buffer to size[0]*size[1]*size[2]*channels");
  }
  if (format == Format::kPlanar && size[2] != 1) {
    SEGICL_THROW(DataError, "PNG holds one 2D slice, the data has " + std::to_string(size[2]), path,
                 "write 3D data as .nii.gz");
  }
  return format;
}

template <typename Pixel, unsigned Dim>
void write_label_grid(const LabelMap& labels, const std::string& path, bool compress) {
  auto image = make_image<Pixel, Dim>(labels.size, labels.geometry);
  Pixel* out = image->GetBufferPointer();
  for (size_t i = 0; i < labels.labels.size(); ++i) out[i] = static_cast<Pixel>(labels.labels[i]);
  write_with_itk<itk::Image<Pixel, Dim>>(image, path, compress);
}

template <unsigned Dim>
void write_float_grid(const Volume& volume, const std::string& path) {
  if (volume.channels == 1) {
    auto image = make_image<float, Dim>(volume.size, volume.geometry);
    std::copy(volume.voxels.begin(), volume.voxels.end(), image->GetBufferPointer());
    write_with_itk<itk::Image<float, Dim>>(image, path, true);
    return;
  }
  using Vector = itk::VectorImage<float, Dim>;
  auto scalar = make_image<float, Dim>(volume.size, volume.geometry);
  auto image = Vector::New();
  image->CopyInformation(scalar);
  image->SetRegions(scalar->GetLargestPossibleRegion());
  image->SetVectorLength(static_cast<unsigned>(volume.channels));
  image->Allocate();
  std::copy(volume.voxels.begin(), volume.voxels.end(), image->GetBufferPointer());
  write_with_itk<Vector>(image, path, true);
}

}  // namespace

Volume read_image(const std::string& path) {
  Decoded decoded = decode(path, /*expand_palette=*/true);
  int64_t bad = decoded.nonfinite_in_file;
  for (float v : decoded.volume.voxels) bad += !std::isfinite(v);
  if (bad > 0) {
    SEGICL_THROW(DataError,
                 "image holds " + std::to_string(bad) + " NaN/Inf intensities in " + path, path,
                 "replace non-finite voxels (e.g. with the background value) and re-export");
  }
  return std::move(decoded.volume);
}

LabelMap read_labels(const std::string& path) {
  // Palette PNG label maps store class ids as palette indices: read the indices, not colours.
  Decoded decoded = decode(path, /*expand_palette=*/false);
  Volume& volume = decoded.volume;
  if (decoded.stored_components >= 3) {
    SEGICL_THROW(DataError, "label map is an RGB image", path,
                 "store labels as a single-channel integer image (0 = background)");
  }
  LabelMap labels;
  labels.dims = volume.dims;
  labels.size = volume.size;
  labels.geometry = volume.geometry;
  labels.labels.resize(volume.voxels.size());
  int64_t fractional = decoded.nonfinite_in_file, negative = 0, too_large = 0;
  for (size_t i = 0; i < volume.voxels.size(); ++i) {
    const float v = volume.voxels[i];
    if (!std::isfinite(v) || v != std::floor(v)) {
      ++fractional;
    } else if (v < 0) {
      ++negative;
    } else if (v > 65535.0f) {
      ++too_large;
    } else {
      labels.labels[i] = static_cast<uint16_t>(v);
    }
  }
  if (fractional > 0) {
    SEGICL_THROW(DataError, "label map holds " + std::to_string(fractional) + " non-integer values",
                 path, "labels must be integer class ids; was an image passed as the label map?");
  }
  if (negative > 0) {
    SEGICL_THROW(DataError, "label map holds " + std::to_string(negative) + " negative values",
                 path, "labels must be class ids >= 0 (0 = background)");
  }
  if (too_large > 0) {
    SEGICL_THROW(DataError, "label map holds " + std::to_string(too_large) + " values above 65535",
                 path, "relabel the classes to ids 0..65535");
  }
  return labels;
}

void write_labels(const LabelMap& labels, const std::string& path) {
  const Format format = check_writable(path, labels.size, labels.dims, labels.labels.size(),
                                       static_cast<size_t>(labels.num_voxels()));
  const uint16_t max_label =
      labels.labels.empty() ? 0 : *std::max_element(labels.labels.begin(), labels.labels.end());
  if (format == Format::kPlanar) {
    if (max_label > 255) {
      SEGICL_THROW(
          DataError,
          "PNG label maps hold values up to 255, this one has " + std::to_string(max_label), path,
          "write the label map as .nii.gz");
    }
    write_label_grid<uint8_t, 2>(labels, path, false);
    return;
  }
  // uint8 on disk when it fits, like the datasets in ../shared/data (FORMAT.md).
  const bool small = max_label <= 255;
  if (labels.dims == 2) {
    small ? write_label_grid<uint8_t, 2>(labels, path, true)
          : write_label_grid<uint16_t, 2>(labels, path, true);
  } else {
    small ? write_label_grid<uint8_t, 3>(labels, path, true)
          : write_label_grid<uint16_t, 3>(labels, path, true);
  }
}

void write_image(const Volume& image, const std::string& path) {
  const Format format = check_writable(path, image.size, image.dims, image.voxels.size(),
                                       static_cast<size_t>(image.num_voxels() * image.channels));
  if (image.channels != 1 && image.channels != 3) {
    SEGICL_THROW(DataError,
                 "images are written with 1 or 3 channels, got " + std::to_string(image.channels),
                 path, "");
  }
  if (format == Format::kPlanar) {
    if (image.channels == 1) {
      auto out = make_image<uint8_t, 2>(image.size, image.geometry);
      uint8_t* buffer = out->GetBufferPointer();
      for (size_t i = 0; i < image.voxels.size(); ++i) {
        float v = std::round(image.voxels[i]);
        buffer[i] = static_cast<uint8_t>(std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 255.0f));
      }
      write_with_itk<itk::Image<uint8_t, 2>>(out, path, false);
    } else {
      using Rgb = itk::RGBPixel<uint8_t>;
      auto out = make_image<Rgb, 2>(image.size, image.geometry);
      Rgb* buffer = out->GetBufferPointer();
      for (size_t i = 0; i < static_cast<size_t>(image.num_voxels()); ++i) {
        for (int c = 0; c < 3; ++c) {
          float v = std::round(image.voxels[i * 3 + c]);
          buffer[i][c] = static_cast<uint8_t>(std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 255.0f));
        }
      }
      write_with_itk<itk::Image<Rgb, 2>>(out, path, false);
    }
    return;
  }
  image.dims == 2 ? write_float_grid<2>(image, path) : write_float_grid<3>(image, path);
}

bool available() { return true; }

}  // namespace segicl::io
