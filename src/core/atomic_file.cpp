// Atomic publish: temp file in the target folder, fsync, rename, fsync the folder.
#include "segicl/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "segicl/core/error.h"

namespace segicl {
namespace fs = std::filesystem;
namespace {

std::string temp_name_for(const std::string& path) {
  // Keep the extension last so extension-driven writers (ITK, PNG) still pick the format.
  fs::path p(path);
  std::string name = p.filename().string();
  std::string ext;
  for (const char* e : {".nii.gz", ".nii", ".png", ".mha", ".nrrd", ".json", ".pt", ".csv", ".md"}) {
    size_t n = std::strlen(e);
    if (name.size() > n && name.compare(name.size() - n, n, e) == 0) {
      ext = e;
      name = name.substr(0, name.size() - n);
      break;
    }
  }
  return (p.parent_path() / ("." + name + ".tmp" + std::to_string(::getpid()) + ext)).string();
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // best effort for folders on filesystems that refuse it
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void publish_atomic(const std::string& path, const std::function<void(const std::string&)>& writer) {
  const std::string tmp = temp_name_for(path);
  try {
    writer(tmp);
    if (!fs::exists(tmp)) {
      SEGICL_THROW(IoError, "writer produced no file", path, "check free disk space and permissions");
    }
    fsync_path(tmp, false);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
      SEGICL_THROW(IoError, "cannot rename temp file into place: " + ec.message(), path,
                   "check that the folder is writable");
    }
    fs::path parent = fs::path(path).parent_path();
    fsync_path(parent.empty() ? "." : parent.string(), true);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  publish_atomic(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      SEGICL_THROW(IoError, std::string("cannot create file: ") + std::strerror(errno), path,
                   "check that the folder exists and is writable");
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      SEGICL_THROW(IoError, "write failed (disk full?)", path, "free disk space and retry");
    }
  });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    SEGICL_THROW(IoError, fs::exists(path) ? "cannot read file" : "file not found", path,
                 "check the path and permissions");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace segicl
