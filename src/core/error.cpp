// segicl::Error helpers: throw-site formatting and the exit-code mapping of STYLE.md.
#include "segicl/core/error.h"

#include <cstring>

namespace segicl {

namespace detail {
std::string where(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}
}  // namespace detail

int exit_code_for(const std::exception& e) {
  if (dynamic_cast<const UsageError*>(&e) || dynamic_cast<const ConfigError*>(&e)) return 2;
  if (dynamic_cast<const IoError*>(&e) || dynamic_cast<const DataError*>(&e) ||
      dynamic_cast<const FormatError*>(&e))
    return 3;
  return 1;
}

}  // namespace segicl
