// io without ITK (SEGICL_WITH_ITK=OFF, e.g. the GPU machine): the same API, every read or write
// throws IoError saying how to get a build that can. It never pretends to read anything.
#include "segicl/core/error.h"
#include "segicl/io/volume.h"

namespace segicl::io {
namespace {
constexpr const char* kHint = "rebuilt without ITK; reconfigure with SEGICL_WITH_ITK=ON";
}

Volume read_image(const std::string& path) {
  SEGICL_THROW(IoError, "cannot read image: segicl was built without ITK", path, kHint);
}

LabelMap read_labels(const std::string& path) {
  SEGICL_THROW(IoError, "cannot read label map: segicl was built without ITK", path, kHint);
}

void write_labels(const LabelMap&, const std::string& path) {
  SEGICL_THROW(IoError, "cannot write label map: segicl was built without ITK", path, kHint);
}

void write_image(const Volume&, const std::string& path) {
  SEGICL_THROW(IoError, "cannot write image: segicl was built without ITK", path, kHint);
}

bool available() { return false; }

}  // namespace segicl::io
