// The single-host launcher of `segicl train --nproc N`: starts N copies of this program with
// torchrun's environment, watches them, and stops the whole job when one fails. POSIX only.
// Not a multi-host launcher: across hosts torchrun, srun or Kubernetes start the workers.
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/train/distributed.h"

extern char** environ;

namespace segicl::train {

namespace {

// Workers' pids for the signal handler (which may only touch plain memory and call kill()).
constexpr int kMaxWorkers = 1024;
pid_t g_workers[kMaxWorkers];
volatile sig_atomic_t g_worker_count = 0;

void forward_signal(int signal) {
  for (int i = 0; i < g_worker_count; ++i)
    if (g_workers[i] > 0) ::kill(g_workers[i], signal);
}

// A port the kernel says is free now. Another process could take it before rank 0 binds it; then
// the rendezvous fails with "address in use" and the job stops with that message.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) SEGICL_THROW(Error, std::string("socket(): ") + std::strerror(errno), "", "");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    int error = errno;
    ::close(fd);
    SEGICL_THROW(Error, std::string("cannot find a free loopback port: ") + std::strerror(error),
                 "",
                 "set MASTER_PORT and start the ranks yourself (see README, Distributed training)");
  }
  int port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int signal = WTERMSIG(status);
    return "was killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    size_t end = all.find('\0', begin);
    if (end == std::string::npos) end = all.size();
    args.push_back(all.substr(begin, end - begin));
    begin = end + 1;
  }
  return args;
}

LaunchResult launch_local_workers(const std::vector<std::string>& args, int nproc,
                                  std::chrono::seconds grace) {
  if (nproc < 1 || nproc > kMaxWorkers)
    SEGICL_THROW(UsageError, "--nproc must be in [1, " + std::to_string(kMaxWorkers) + "]", "", "");
  auto logger = log::get("train");
  const int port = free_port();
  const std::string exe = "/proc/self/exe";

  // Everything the children need is built before the first spawn: after it, only waiting.
  std::map<std::string, std::string> base;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string::npos) base[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  base["WORLD_SIZE"] = std::to_string(nproc);
  base["LOCAL_WORLD_SIZE"] = std::to_string(nproc);
  base["MASTER_ADDR"] = "127.0.0.1";
  base["MASTER_PORT"] = std::to_string(port);
  std::vector<char*> argv;
  std::vector<std::string> arg_storage(args.begin(), args.end());
  if (arg_storage.empty()) arg_storage.push_back("segicl");
  for (auto& a : arg_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct sigaction forward {
  }, old_int{}, old_term{};
  forward.sa_handler = forward_signal;
  sigemptyset(&forward.sa_mask);
  sigaction(SIGINT, &forward, &old_int);
  sigaction(SIGTERM, &forward, &old_term);
  g_worker_count = 0;

  std::vector<pid_t> pids(nproc, -1);
  std::vector<int> status_of(nproc, -1);
  auto stop_all = [&](int signal) {
    for (int r = 0; r < nproc; ++r)
      if (pids[r] > 0 && status_of[r] == -1) ::kill(pids[r], signal);
  };
  auto restore_signals = [&] {
    g_worker_count = 0;
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  };

  for (int r = 0; r < nproc; ++r) {
    auto env = base;
    env["RANK"] = std::to_string(r);
    env["LOCAL_RANK"] = std::to_string(r);
    std::vector<std::string> env_storage;
    for (auto& [key, value] : env) env_storage.push_back(key + "=" + value);
    std::vector<char*> envp;
    for (auto& entry : env_storage) envp.push_back(entry.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    int error = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), envp.data());
    if (error != 0) {
      stop_all(SIGKILL);
      for (int q = 0; q < r; ++q) ::waitpid(pids[q], nullptr, 0);
      restore_signals();
      SEGICL_THROW(Error,
                   "cannot start worker rank " + std::to_string(r) + ": " + std::strerror(error),
                   exe, "");
    }
    pids[r] = pid;
    g_workers[r] = pid;
    g_worker_count = r + 1;
    logger->info("worker rank {} of {}: pid {} (MASTER_PORT {})", r, nproc, pid, port);
  }

  LaunchResult result;
  int running = nproc, failed_rank = -1;
  auto deadline = std::chrono::steady_clock::time_point::max();
  bool killed = false;
  while (running > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;  // ECHILD: nothing left to wait for
    if (pid <= 0) {
      if (!killed && std::chrono::steady_clock::now() > deadline) {
        logger->warn("workers still running {} s after rank {} failed: killing them", grace.count(),
                     failed_rank);
        stop_all(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int rank = -1;
    for (int r = 0; r < nproc; ++r)
      if (pids[r] == pid) rank = r;
    if (rank < 0) continue;  // not ours
    status_of[rank] = status;
    --running;
    const bool ok = WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 130);
    if (!ok && failed_rank < 0) {
      failed_rank = rank;
      logger->error("worker rank {} (pid {}) {}: stopping the other workers", rank, pid,
                    describe(status));
      stop_all(SIGTERM);
      deadline = std::chrono::steady_clock::now() + grace;
    }
  }
  restore_signals();

  if (failed_rank >= 0) {
    const int status = status_of[failed_rank];
    result.message = "worker rank " + std::to_string(failed_rank) + " of " + std::to_string(nproc) +
                     " (pid " + std::to_string(pids[failed_rank]) + ") " + describe(status) +
                     "; the job was stopped";
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    result.exit_code = (code == 2 || code == 3) ? code : 1;
    return result;
  }
  for (int r = 0; r < nproc; ++r)
    if (WIFEXITED(status_of[r]) && WEXITSTATUS(status_of[r]) == 130) result.exit_code = 130;
  return result;
}

}  // namespace segicl::train
