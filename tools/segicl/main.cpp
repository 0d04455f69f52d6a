// segicl: the command-line tool. Verbs by pipeline stage (data, pack, train, eval, segment,
// serve, model); this file only wires them and is the one boundary that catches every error.
#include <cstdlib>
#include <iostream>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/runtime.h"

namespace segicl::cli {

void start(const GlobalOptions& global, Process process) {
  log::init(global.quiet ? "warn" : global.log_level, global.log_file);
  runtime::set_threads(global.threads);
  if (process == Process::kBatchJob) runtime::reuse_large_blocks();
  runtime::check_blas_speed();
}

std::string default_model() {
  if (const char* env = std::getenv("SEGICL_MODEL"); env && *env) return env;
  return std::string(SEGICL_SOURCE_DIR) + "/" + kShippedModel;
}

std::vector<int> split_ints(const std::string& text, const std::string& option, const std::string& example) {
  std::vector<int> values;
  for (const auto& item : split_list(text)) {
    try {
      values.push_back(std::stoi(item));
    } catch (const std::exception&) {
      SEGICL_THROW(UsageError, option + " must be integers, got '" + item + "'", "", example);
    }
  }
  return values;
}

#ifdef SEGICL_HAVE_SERVE
void register_serve(CLI::App& app, GlobalOptions& global);  // cmd_serve.cpp, built with cpp-httplib
#endif

}  // namespace segicl::cli

int main(int argc, char** argv) {
  using namespace segicl;
  CLI::App app{"segicl: segment any medical image from a text instruction and/or a few examples"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every verb");
  cli::GlobalOptions global;
  app.add_option("--threads", global.threads, "Intra-op CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--log-level", global.log_level, "error, warn, info, debug or trace")->capture_default_str();
  app.add_option("--log-file", global.log_file, "Also write the log to this file");
  app.add_flag("-q,--quiet", global.quiet, "Only warnings and errors on stderr");
  app.add_option("--data", global.data_root, "Corpus folder (default: $SEGICL_DATA, else ../shared/data)");
  cli::register_data(app, global);
  cli::register_pack(app, global);
  cli::register_model(app, global);
  cli::register_train(app, global);
  cli::register_eval(app, global);
  cli::register_compare(app, global);
  cli::register_segment(app, global);
#ifdef SEGICL_HAVE_SERVE
  cli::register_serve(app, global);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const cli::Interrupted&) {
    return 130;
  } catch (const Error& e) {
    std::cerr << "error: " << e.message() << "\n";
    if (!e.file().empty()) std::cerr << "  file: " << e.file() << "\n";
    if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << "\n";
    std::cerr << "  (" << e.kind() << " at " << e.where() << ")\n";
    return exit_code_for(e);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
