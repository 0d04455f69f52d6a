// `segicl serve`: loads a checkpoint once and answers HTTP segment requests (docs/serve.md), with
// the NiiVue page at /. Parses flags and handles signals; the server itself is segicl_serve.
#include <signal.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/serve/server.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace segicl::cli {
namespace {

std::string executable_path() {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : path.string();
}

// SIGINT/SIGTERM write a byte to this pipe (write() is async-signal-safe); a waiting thread then
// stops the server as ordinary code. A signal mask cannot do this: BLAS/OpenMP threads started
// before main() would not inherit it, and the default action would kill the process.
int stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int) {
  const char byte = 1;
  [[maybe_unused]] const ssize_t ignored = ::write(stop_pipe[1], &byte, 1);
}

// glibc gives each thread that meets a locked arena a new one, up to 8 per core, and keeps every
// arena at its high-water mark. The server's 40-odd pool threads each decode uploads and build
// result volumes, so RSS climbed to 1.0-1.2 GB under the load test (bench/serve_load.sh) and
// stayed there; with 2 arenas it stays near 0.33-0.37 GB at the same throughput (4 arenas: 0.46
// GB; reports/RELIABILITY.md). A MALLOC_ARENA_MAX set by the operator wins.
void limit_malloc_arenas() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
}

void run_serve(serve::ServerOptions options) {
  limit_malloc_arenas();
  if (options.web_root.empty()) options.web_root = serve::find_web_root(executable_path());
  if (options.samples_root.empty()) options.samples_root = serve::find_samples_root();
  const std::string host = options.host;
  serve::Server server(std::move(options));
  const int port = server.bind();

  if (::pipe(stop_pipe) != 0) SEGICL_THROW(Error, "cannot create a pipe", "", "");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  std::thread waiter([&server] {
    char byte = 0;
    while (::read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    server.stop();
  });

  // The one stdout line: scripts and tests started with --port 0 read the address from it.
  std::printf("segicl serve: listening on http://%s:%d/\n", host.c_str(), port);
  std::fflush(stdout);
  server.run();
  on_stop_signal(0);  // run() also returns when the listener fails: wake the waiter to join it
  waiter.join();
}

}  // namespace

void register_serve(CLI::App& app, GlobalOptions& global) {
  static serve::ServerOptions o;
  static int threads = -1;
  o.model = default_model();
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve the model over HTTP (API under /v1, NiiVue web page at /); see docs/serve.md\n"
      "  e.g. segicl serve --port 8080 --model models/segicl-crossconv-gpu.pt\n"
      "       curl -F image=@ct.nii.gz -F text='segment the liver' localhost:8080/v1/segment");
  cmd->add_option("--host", o.host,
                  "Address to bind (a non-loopback address without --token logs a warning)")
      ->capture_default_str();
  cmd->add_option("--port", o.port,
                  "TCP port (0: any free port; the bound address is printed on stdout)")
      ->capture_default_str();
  cmd->add_option(
         "--model", o.model,
         std::string("Checkpoint (default: $SEGICL_MODEL, else the shipped ") + kShippedModel + " in the source tree)")
      ->capture_default_str();
  cmd->add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option(
      "--token", o.token,
      "Require 'Authorization: Bearer TOKEN' on /v1/* except /v1/health (default: none)");
  cmd->add_option("--max-upload-mb", o.max_upload_mb, "Largest request body in MiB (larger: 413)")
      ->capture_default_str();
  cmd->add_option("--workers", o.workers, "Segment requests run at once")->capture_default_str();
  cmd->add_option("--queue", o.queue,
                  "Requests that may wait for a worker (more: 503 + Retry-After)")
      ->capture_default_str();
  cmd->add_option(
         "--threads", threads,
         "Intra-op CPU threads for the model (overrides the global --threads; -1: keep it)")
      ->capture_default_str();
  cmd->add_option("--max-steps", o.limits.max_steps, "Largest DDIM steps a request may ask for")
      ->capture_default_str();
  cmd->add_option("--max-samples", o.limits.max_samples,
                  "Largest diffusion samples a request may ask for")
      ->capture_default_str();
  cmd->add_option("--max-examples", o.limits.max_examples, "Most example pairs per request")
      ->capture_default_str();
  cmd->add_option("--web", o.web_root,
                  "Folder of the web page (default: $SEGICL_WEB, web/ next to this binary, or web/ "
                  "in the source tree)");
  cmd->add_option("--samples", o.samples_root,
                  "Bundled samples folder (default: $SEGICL_SAMPLES, else data/samples)");
  cmd->callback([&global] {
    GlobalOptions g = global;
    if (threads >= 0) g.threads = threads;
    start(g, Process::kServer);
    run_serve(o);
  });
}

}  // namespace segicl::cli
