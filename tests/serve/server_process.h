// Starts the built `segicl serve` binary on a free loopback port (--port 0; the server prints the
// bound address on stdout) and stops it with SIGTERM. Shared by the serve integration tests; not
// a general process library.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include "segicl/core/atomic_file.h"

extern char** environ;

namespace segicl::serve::testing {

class ServerProcess {
 public:
  // Runs `segicl --threads 1 serve --port 0 ARGS...`, stderr to `log_path`. Returns "" once the
  // server printed its address, else what went wrong (with the server's log).
  std::string start(const std::vector<std::string>& serve_args, const std::string& log_path) {
    log_path_ = log_path;
    std::vector<std::string> args{SEGICL_BIN, "--threads", "1", "serve", "--port", "0"};
    args.insert(args.end(), serve_args.begin(), serve_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe(out) != 0) return "pipe failed";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int spawned = posix_spawn(&pid_, SEGICL_BIN, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    if (spawned != 0) {
      ::close(out[0]);
      pid_ = -1;
      return std::string("cannot run ") + SEGICL_BIN;
    }
    // EOF instead of the address line means the server exited during start-up.
    stdout_ = ::fdopen(out[0], "r");
    char line[256] = {0};
    const bool got = std::fgets(line, sizeof(line), stdout_) != nullptr;
    const std::string text = line;
    std::smatch match;
    if (!got || !std::regex_search(text, match, std::regex(R"(http://127\.0\.0\.1:(\d+)/)")))
      return "server did not start: '" + text + "'\n" + log();
    port_ = std::stoi(match[1]);
    return "";
  }

  // SIGTERM, then waits; returns the exit status as waitpid gives it (0 = clean exit).
  int stop() {
    if (pid_ <= 0) return 0;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (stdout_) std::fclose(stdout_);
    stdout_ = nullptr;
    return status;
  }

  ~ServerProcess() { stop(); }

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }
  std::string log() const { return log_path_.empty() ? "" : read_file(log_path_); }

 private:
  pid_t pid_ = -1;
  int port_ = -1;
  FILE* stdout_ = nullptr;
  std::string log_path_;
};

}  // namespace segicl::serve::testing
