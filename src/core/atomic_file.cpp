// Atomic publish: temp file in the target folder, fsync, rename, fsync the folder.
#include "segicl/core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "segicl/core/error.h"

namespace segicl {
namespace fs = std::filesystem;
namespace {

// A temp name is "." + stem + ".tmp" + pid + extension; this splits a file name into stem and
// known extension, so that stale temps of the same target can be recognised.
std::pair<std::string, std::string> stem_and_extension(const std::string& filename) {
  for (const char* e :
       {".nii.gz", ".nii", ".png", ".mha", ".nrrd", ".json", ".pt", ".csv", ".md"}) {
    size_t n = std::strlen(e);
    if (filename.size() > n && filename.compare(filename.size() - n, n, e) == 0)
      return {filename.substr(0, filename.size() - n), e};
  }
  return {filename, ""};
}

std::string temp_name_for(const std::string& path) {
  // Keep the extension last so extension-driven writers (ITK, PNG) still pick the format.
  fs::path p(path);
  auto [name, ext] = stem_and_extension(p.filename().string());
  return (p.parent_path() / ("." + name + ".tmp" + std::to_string(::getpid()) + ext)).string();
}

// Removes temps of `path` left by writers that died mid-write (SIGKILL, power loss): a training
// run killed during checkpoint writes would otherwise collect one checkpoint-sized temp per kill.
// Temps of live processes are kept, since another process may be writing the same target.
void remove_stale_temps(const std::string& path) {
  fs::path p(path);
  auto [name, ext] = stem_and_extension(p.filename().string());
  const std::string prefix = "." + name + ".tmp";
  std::error_code ec;
  fs::directory_iterator it(p.parent_path().empty() ? fs::path(".") : p.parent_path(), ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (file.size() <= prefix.size() + ext.size() || file.compare(0, prefix.size(), prefix) != 0 ||
        file.compare(file.size() - ext.size(), ext.size(), ext) != 0)
      continue;
    const std::string digits = file.substr(prefix.size(), file.size() - prefix.size() - ext.size());
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;  // best effort: another cleaner may have removed it first
    fs::remove(it->path(), ignored);
  }
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;  // best effort for folders on filesystems that refuse it
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void publish_atomic(const std::string& path,
                    const std::function<void(const std::string&)>& writer) {
  const std::string tmp = temp_name_for(path);
  remove_stale_temps(path);
  try {
    writer(tmp);
    if (!fs::exists(tmp)) {
      SEGICL_THROW(IoError, "writer produced no file", path,
                   "check free disk space and permissions");
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
