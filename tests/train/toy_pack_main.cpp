// segicl_toy_pack PATH: writes the trainer tests' toy pack (toy_pack.h) to PATH, for scripts that
// need a training pack without the corpus (bench/ddp_scaling.sh). Not a pack tool: see `segicl pack`.
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "toy_pack.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: segicl_toy_pack OUT.pack\n");
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path out(argv[1]);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(dir);
  std::error_code error;
  fs::rename(segicl::train::testing::write_toy_pack(dir), out, error);
  if (error) {
    std::fprintf(stderr, "cannot write %s: %s\n", argv[1], error.message().c_str());
    return 1;
  }
  return 0;
}
