// Shared helpers of the libFuzzer targets: a per-process scratch file for readers that take a
// path, and the one rule every target applies. Not a test framework.
//
// The rule: bad bytes must raise a typed segicl::Error. Any other exception escapes
// LLVMFuzzerTestOneInput, so libFuzzer reports it (as a crash), like an ASan/UBSan report.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "segicl/core/error.h"
#include "segicl/core/log.h"

namespace segicl::fuzz {

// A file name ending in `extension` (the readers pick the format from it) in /dev/shm when it
// exists (no disk writes at ~1000 inputs/s), else the temp folder; unique per process so several
// fuzzers and jobs (-jobs=N) can run at once.
inline std::string scratch_path(const std::string& extension) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
  return (dir / ("segicl-fuzz-" + std::to_string(::getpid()) + extension)).string();
}

inline void write_scratch(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();  // the harness, not the input, failed
  }
}

// Runs `body` and accepts exactly the typed errors.
template <typename Body>
void expect_typed_errors(Body&& body) {
  try {
    body();
  } catch (const segicl::Error&) {
  }
}

// Keeps the log quiet (one info line per loaded checkpoint would flood the fuzzer's output).
inline void quiet_logs() { log::init("error"); }

}  // namespace segicl::fuzz
