// `segicl serve`: an HTTP server over one loaded Segmenter (cpp-httplib). Routes: GET /v1/health,
// GET /v1/model, POST /v1/segment, GET /v1/samples[/...], and the web page at /. The wire format
// is documented in docs/serve.md. Not a general file server and not a job system: requests are
// answered synchronously, through a bounded admission queue.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "segicl/serve/api.h"

namespace segicl::serve {

struct ServerOptions {
  std::string host =
      "127.0.0.1";             // bind address; anything but loopback without a token logs a warning
  int port = 8080;             // TCP port; 0 picks a free one (see Server::port())
  std::string model;           // checkpoint path (required)
  std::string device = "cpu";  // auto, cpu, cuda or cuda:N
  std::string token;  // "" = no auth; else `Authorization: Bearer <token>` on /v1/* but health
  int64_t max_upload_mb = 256;  // whole request body limit in MiB; larger -> 413
  int workers = 1;              // segmentations running at once (each uses the torch thread pool)
  int queue = 4;                // admitted requests waiting for a worker; more -> 503 + Retry-After
  int retry_after_s = 5;        // Retry-After seconds sent with a 503
  std::string web_root;         // folder with index.html (and vendor/niivue/); "" = no page
  std::string samples_root;  // data/samples-like folder (DATASET/images, DATASET/labels); "" = none
  RequestLimits limits;      // per-request caps (examples, steps, samples, text)
};

// Bounds concurrent work: at most `workers` admitted requests run at once and at most `waiting`
// more wait for a turn; try_admit() refuses the rest immediately. Thread-safe.
class AdmissionQueue {
 public:
  AdmissionQueue(int workers, int waiting);

  // A place in the queue; releases it (and wakes a waiter) when destroyed.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();
    // Blocks until this request may run. Returns immediately when called again.
    void wait_turn();

   private:
    friend class AdmissionQueue;
    explicit Ticket(AdmissionQueue* queue) : queue_(queue) {}
    AdmissionQueue* queue_;
    bool running_ = false;
  };

  // A ticket, or nothing when workers + waiting requests are already admitted.
  std::optional<Ticket> try_admit();
  int running() const;
  int waiting() const;
  int capacity() const { return workers_ + max_waiting_; }

 private:
  const int workers_, max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable turn_;
  int running_ = 0, waiting_ = 0;
};

// The server. Thread-safety: stop() and port() may be called from any thread; run() from one.
class Server {
 public:
  // Loads the model once (IoError/FormatError as infer::Segmenter) and checks the options
  // (UsageError for a bad port, queue or limit). Does not bind yet.
  explicit Server(ServerOptions options);
  ~Server();

  // Binds host:port; IoError when the address is taken or invalid. Returns the bound port.
  int bind();
  // Serves until stop(); binds first if bind() was not called. Blocking.
  void run();
  // Stops accepting and makes run() return. Safe from another thread (not from a signal handler).
  void stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Where the page is: $SEGICL_WEB, else `web/` next to the binary (<build>/bin/web, copied there
// with vendored NiiVue by the segicl_web target), else the source tree's web/. Returns the first
// folder holding index.html, "" when none does.
std::string find_web_root(const std::string& executable_path);

// Bundled samples: $SEGICL_SAMPLES, else data/samples in the source tree; "" when absent.
std::string find_samples_root();

}  // namespace segicl::serve
