// Data-parallel training on PyTorch's c10d: where a process sits in a job (torchrun's environment
// variables), the collectives the training loop needs (TCPStore rendezvous, Gloo on CPU, NCCL on
// CUDA), and the single-host launcher behind `segicl train --nproc N`.
// Not a general collective library and not DDP's autograd-hook Reducer: gradients are averaged
// once per step after backward, in flat buckets (docs/distributed.md says why).
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace segicl::train {

// One process's place in a data-parallel job. world_size 1 means "not distributed".
struct DistributedEnv {
  int rank = 0;  // 0 .. world_size-1; rank 0 hosts the store, logs and checkpoints
  int world_size = 1;
  int local_rank = 0;        // index on this host: picks cuda:<local_rank>
  int local_world_size = 1;  // processes on this host: splits the CPU threads between them
  std::string master_addr;   // the host of rank 0 (TCPStore server)
  int master_port = 0;

  bool active() const { return world_size > 1; }

  // Reads torchrun's variables RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK,
  // LOCAL_WORLD_SIZE, defaulting to RANK and WORLD_SIZE). Returns nullopt when RANK is unset.
  // Throws UsageError when some are set and others missing or out of range.
  static std::optional<DistributedEnv> from_environment();
};

// Settings of the collectives (not stored in checkpoints: they describe the job, not the run).
struct DistributedOptions {
  DistributedEnv env;
  // How long a collective or the rendezvous waits for the other ranks before the job fails. A
  // worker that dies is usually noticed at once (its sockets close); this bounds the wait for one
  // that hangs. It must exceed rank 0's longest pause: a validation pass plus a checkpoint write.
  std::chrono::seconds timeout{300};
  // Bucket size of the gradient all-reduce (PyTorch DDP's default bucket_cap_mb is 25).
  int64_t bucket_bytes = 25 << 20;
};

// True when this build has c10d (SEGICL_WITH_DISTRIBUTED); "gloo", "nccl" or "gloo,nccl" lists
// the backends compiled in ("" without c10d).
bool distributed_available();
std::string distributed_backends();

// A process group over all ranks of the job, for the training loop. Construction is the
// rendezvous: rank 0 starts a TCPStore on master_addr:master_port and every rank joins it, then
// Gloo (CPU device) or NCCL (CUDA device) connects the ranks. Every method is a collective: all
// ranks call it in the same order with matching arguments. Not safe for concurrent use.
// Errors (a dead or hung peer, a timeout) are thrown as segicl::Error naming the rank and a hint.
class Communicator {
 public:
  // REQUIRES: options.env.active(). Throws UsageError when built without c10d or without a
  // backend for `device`, Error when the rendezvous fails within options.timeout.
  Communicator(const DistributedOptions& options, const torch::Device& device);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int world_size() const;
  std::string backend() const;  // "gloo" or "nccl"

  // Overwrites `tensors` on every rank with rank 0's values (parameters at start-up).
  void broadcast(const std::vector<torch::Tensor>& tensors);

  // Replaces each parameter's gradient by its mean over the ranks, in flat buckets, and returns
  // the mean of `local_loss`. A parameter without a gradient on some rank counts as zero there;
  // one without a gradient on every rank keeps none (so the optimizer skips it, as in one process).
  // After the call the gradients are bitwise identical on all ranks.
  double average_gradients(const std::vector<torch::Tensor>& parameters, double local_loss);

  // Element i is true on every rank when flags[i] is true on any rank (stop requests, time limits).
  std::vector<bool> any(const std::vector<bool>& flags);

  // Rank 0 receives every rank's `value` (index = rank); other ranks receive {}. Two all-gathers
  // on the process group: meant for small things at checkpoints (RNG states, parameter digests).
  std::vector<std::string> gather_to_root(const std::string& name, const std::string& value);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A digest of the parameters' bytes (FNV-1a over every element, in order): equal digests on two
// ranks mean bitwise-equal parameters.
uint64_t parameter_digest(const std::vector<torch::Tensor>& parameters);

// ---- single-host launcher (`segicl train --nproc N`) -------------------------------------------

struct LaunchResult {
  int exit_code = 0;    // 0 when every worker succeeded; else what the CLI should exit with
  std::string message;  // why the job failed ("" on success)
};

// Starts `nproc` copies of this program (/proc/self/exe) with `args` (args[0] is ignored) and the
// torchrun variables set (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1,
// MASTER_PORT=a free port), logs each worker's pid, then waits. When a worker fails (non-zero exit
// or a signal) the others get SIGTERM, then SIGKILL after `grace`, and the result names the
// failed rank. SIGINT/SIGTERM to the launcher are passed on to the workers (they checkpoint and
// exit 130). Throws Error when a worker cannot be started. Call from the main thread only.
LaunchResult launch_local_workers(const std::vector<std::string>& args, int nproc,
                                  std::chrono::seconds grace = std::chrono::seconds(10));

// This process's command line as the kernel saw it (/proc/self/cmdline).
std::vector<std::string> own_command_line();

}  // namespace segicl::train
