// spdlog set-up: one shared set of sinks (stderr, optional file) for every area logger.
#include "segicl/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

#include "segicl/core/error.h"

namespace segicl::log {
namespace {

std::mutex g_mutex;
std::vector<spdlog::sink_ptr> g_sinks;
spdlog::level::level_enum g_level = spdlog::level::info;

std::vector<spdlog::sink_ptr>& sinks_locked() {
  if (g_sinks.empty()) g_sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  return g_sinks;
}

}  // namespace

void init(const std::string& level, const std::string& log_file) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    SEGICL_THROW(ConfigError, "unknown log level '" + level + "'", "",
                 "use one of error, warn, info, debug, trace");
  }
  g_level = parsed;
  g_sinks.clear();
  g_sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (!log_file.empty()) {
    try {
      g_sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file));
    } catch (const spdlog::spdlog_ex& e) {
      SEGICL_THROW(IoError, std::string("cannot open log file: ") + e.what(), log_file,
                   "check that the folder exists and is writable");
    }
  }
  spdlog::drop_all();
}

std::shared_ptr<spdlog::logger> get(const std::string& area) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto existing = spdlog::get(area)) return existing;
  auto& sinks = sinks_locked();
  auto logger = std::make_shared<spdlog::logger>(area, sinks.begin(), sinks.end());
  logger->set_pattern("%H:%M:%S %l %n: %v");
  logger->set_level(g_level);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace segicl::log
