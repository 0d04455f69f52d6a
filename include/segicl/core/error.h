// segicl's one exception hierarchy: every library error is a segicl::Error carrying what went
// wrong, the file it concerns (may be empty), a hint for the user and where it was thrown.
// It is not a status-code API: library code throws; only the CLI/server boundary catches all.
#pragma once

#include <stdexcept>
#include <string>

namespace segicl {

class Error : public std::runtime_error {
 public:
  Error(std::string message, std::string file = {}, std::string hint = {}, std::string where = {})
      : std::runtime_error(message),
        message_(std::move(message)),
        file_(std::move(file)),
        hint_(std::move(hint)),
        where_(std::move(where)) {}

  const std::string& message() const { return message_; }
  // The input, checkpoint or preset the error concerns; empty if none.
  const std::string& file() const { return file_; }
  // What the user should do next; empty if there is nothing useful to say.
  const std::string& hint() const { return hint_; }
  // "source.cpp:123" of the throw site.
  const std::string& where() const { return where_; }
  // Category name used in CLI output and JSON errors ("IoError", ...).
  virtual const char* kind() const { return "Error"; }

 private:
  std::string message_, file_, hint_, where_;
};

#define SEGICL_DEFINE_ERROR(Name)                     \
  class Name : public Error {                         \
   public:                                            \
    using Error::Error;                               \
    const char* kind() const override { return #Name; } \
  }

SEGICL_DEFINE_ERROR(ConfigError);  // bad preset/config key or value
SEGICL_DEFINE_ERROR(IoError);      // missing, unreadable or unwritable file
SEGICL_DEFINE_ERROR(DataError);    // readable but unusable content (NaN, grid mismatch, 4D, ...)
SEGICL_DEFINE_ERROR(FormatError);  // our own binary formats: bad magic, truncated, unknown version
SEGICL_DEFINE_ERROR(ShapeError);   // tensor shape contract broken at a public entry point
SEGICL_DEFINE_ERROR(UsageError);   // bad command-line usage

#undef SEGICL_DEFINE_ERROR

namespace detail {
std::string where(const char* file, int line);
}

// SEGICL_THROW(IoError, "cannot open", path, "check the path") records the throw site.
#define SEGICL_THROW(Kind, message, file, hint) \
  throw ::segicl::Kind((message), (file), (hint), ::segicl::detail::where(__FILE__, __LINE__))

// Exit code for an error category, following STYLE.md: usage/config 2, input 3, other 1.
int exit_code_for(const std::exception& e);

}  // namespace segicl
