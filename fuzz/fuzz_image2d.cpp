// Fuzz target: 2D images: PNG, JPEG, BMP and TIFF, the extension chosen from the magic bytes through
// io::read_image and io::read_labels, i.e. ITK over libpng, libjpeg and libtiff (uninstrumented), as behind
// `segicl segment` and the server's uploads. Seeds: fuzz/corpus/fuzz_image2d.
#include <cstdint>
#include <cstring>

#include "fuzz_util.h"
#include "segicl/io/volume.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segicl::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string png = segicl::fuzz::scratch_path(".png");
  static const std::string jpg = segicl::fuzz::scratch_path(".jpg");
  static const std::string bmp = segicl::fuzz::scratch_path(".bmp");
  static const std::string tif = segicl::fuzz::scratch_path(".tif");
  auto starts = [&](const char* magic, size_t n) {
    return size >= n && std::memcmp(data, magic, n) == 0;
  };
  // Classic TIFF (42) and BigTIFF (43), either byte order.
  const bool tiff = starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4);
  const std::string& path = starts("\xff\xd8", 2) ? jpg : starts("BM", 2) ? bmp : tiff ? tif : png;
  segicl::fuzz::write_scratch(path, data, size);
  bool image_ok = false;
  segicl::fuzz::expect_typed_errors([&] {
    segicl::io::read_image(path);
    image_ok = true;
  });
  if (image_ok) segicl::fuzz::expect_typed_errors([&] { segicl::io::read_labels(path); });
  return 0;
}
