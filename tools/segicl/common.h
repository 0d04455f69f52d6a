// Shared pieces of the segicl command-line tool: global options and the verb registry. Each verb
// lives in cmd_<verb>.cpp and only parses flags and calls the libraries.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace segicl::cli {

struct GlobalOptions {
  int threads = 0;            // 0 = all hardware threads
  std::string log_level = "info";
  std::string log_file;
  bool quiet = false;
  std::string data_root;      // --data; else $SEGICL_DATA, else ../shared/data
};

// Each verb registers its subcommand and a callback run after parsing.
void register_data(CLI::App& app, GlobalOptions& global);
void register_pack(CLI::App& app, GlobalOptions& global);
void register_model(CLI::App& app, GlobalOptions& global);
void register_train(CLI::App& app, GlobalOptions& global);
void register_eval(CLI::App& app, GlobalOptions& global);
void register_compare(CLI::App& app, GlobalOptions& global);
void register_segment(CLI::App& app, GlobalOptions& global);

// Thrown by a verb that stopped on SIGINT/SIGTERM after saving its state: exit code 130.
struct Interrupted {};

// Splits a comma-separated flag value ("0,1,3"); "" gives no items, a trailing comma is ignored.
inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t begin = 0; begin < text.size();) {
    size_t comma = text.find(',', begin);
    parts.push_back(text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    begin = comma == std::string::npos ? text.size() : comma + 1;
  }
  return parts;
}

// Comma-separated integers of flag `option` ("0,1,3"); UsageError naming the flag and the item
// that is not one, with `example` as the hint.
std::vector<int> split_ints(const std::string& text, const std::string& option, const std::string& example);

// The shipped default model, relative to the source tree (models/README.md says why this one).
inline constexpr const char* kShippedModel = "models/segicl-crossconv-wise.pt";

// $SEGICL_MODEL, else the shipped model in the source tree: what segment and serve load by default.
std::string default_model();

// A batch job (every verb but serve) keeps large freed blocks for reuse (runtime::reuse_large_blocks);
// the server keeps glibc's defaults and its own arena limit, for a low resident size.
enum class Process { kBatchJob, kServer };

// Applies --threads/--log-level/--quiet and runs the BLAS check; called by every verb first.
void start(const GlobalOptions& global, Process process = Process::kBatchJob);

}  // namespace segicl::cli
