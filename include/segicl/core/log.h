// Logging: spdlog loggers named by area, all writing "time level area: message" to stderr
// (and optionally a file). Results go to stdout, never through here.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace segicl::log {

// Configures every logger: level is one of error, warn, info, debug, trace. Thread-safe to call
// once at start-up; later calls replace the sinks. Throws ConfigError for an unknown level.
void init(const std::string& level = "info", const std::string& log_file = {});

// The logger for an area ("data", "train", ...), created on first use with the current sinks.
std::shared_ptr<spdlog::logger> get(const std::string& area);

}  // namespace segicl::log
