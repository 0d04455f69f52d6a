// Placeholder: replaced by the ITK implementation.
#include "segicl/io/volume.h"
namespace segicl::io {
bool available() { return false; }
}  // namespace segicl::io
