// Atomic file replacement (leveldb's SetCurrentFile pattern): write NAME.tmp.<pid> in the same
// folder, fsync, rename over NAME, fsync the folder; the temp is removed on any failure. A reader
// therefore sees the old file or the new one, never a half-written one.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace segicl {

// Writes `bytes` to `path` atomically. Throws IoError naming the path.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Calls `writer(tmp_path)` to produce the file, then publishes it atomically. The writer may use
// any library that writes to a path (ITK, torch::save). Throws IoError if the writer fails or
// produced nothing.
void publish_atomic(const std::string& path, const std::function<void(const std::string&)>& writer);

// Reads a whole file; IoError naming the path if it cannot be read.
std::string read_file(const std::string& path);

}  // namespace segicl
