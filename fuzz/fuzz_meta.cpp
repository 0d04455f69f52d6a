// Fuzz target: single-file MetaImage (.mha) and NRRD (.nrrd when the input starts with "NRRD") files through
// io::read_image and io::read_labels, i.e. our length check then ITK's MetaIO and NRRD (teem) readers, as behind
// `segicl segment` and the server's uploads. Seeds: fuzz/corpus/fuzz_meta.
#include <cstdint>

#include "fuzz_util.h"
#include "segicl/io/volume.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segicl::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string mha = segicl::fuzz::scratch_path(".mha");
  static const std::string nrrd = segicl::fuzz::scratch_path(".nrrd");
  const bool is_nrrd = size >= 4 && data[0] == 'N' && data[1] == 'R' && data[2] == 'R' && data[3] == 'D';
  const std::string& path = is_nrrd ? nrrd : mha;
  segicl::fuzz::write_scratch(path, data, size);
  bool image_ok = false;
  segicl::fuzz::expect_typed_errors([&] {
    segicl::io::read_image(path);
    image_ok = true;
  });
  if (image_ok) segicl::fuzz::expect_typed_errors([&] { segicl::io::read_labels(path); });
  return 0;
}
