// Fuzz target: NIfTI-1/2 files (.nii, and .nii.gz when the input starts with gzip's magic) through
// io::read_image and io::read_labels, i.e. our integrity scan then ITK's NIfTI reader, as behind
// `segicl segment` and the server's uploads. Seeds: fuzz/corpus/fuzz_nifti.
#include <cstdint>

#include "fuzz_util.h"
#include "segicl/io/volume.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segicl::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string nii = segicl::fuzz::scratch_path(".nii");
  static const std::string gz = segicl::fuzz::scratch_path(".nii.gz");
  const std::string& path = size >= 2 && data[0] == 0x1f && data[1] == 0x8b ? gz : nii;
  segicl::fuzz::write_scratch(path, data, size);
  bool image_ok = false;
  segicl::fuzz::expect_typed_errors([&] {
    segicl::io::read_image(path);
    image_ok = true;
  });
  if (image_ok) segicl::fuzz::expect_typed_errors([&] { segicl::io::read_labels(path); });
  return 0;
}
