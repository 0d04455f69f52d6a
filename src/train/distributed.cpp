// c10d glue for data-parallel training: TCPStore rendezvous, a Gloo or NCCL process group, and
// the collectives the loop needs (parameter broadcast, bucketed gradient mean, stop vote, gather).
// Not PyTorch's DDP Reducer (its C++ constructor is built for the Python wrapper; we reduce once
// after backward instead of overlapping with it). Without c10d this file builds stubs that throw.
#include "segicl/train/distributed.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "segicl/core/error.h"
#include "segicl/core/log.h"

#ifdef SEGICL_HAVE_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SEGICL_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef SEGICL_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace segicl::train {

namespace {

std::optional<std::string> env_of(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int env_int(const char* name, int low, int high) {
  auto text = env_of(name);
  if (!text)
    SEGICL_THROW(UsageError, std::string("RANK is set but ") + name + " is not", "",
                 "set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT together (torchrun does)");
  char* end = nullptr;
  long value = std::strtol(text->c_str(), &end, 10);
  if (*end != '\0' || value < low || value > high)
    SEGICL_THROW(UsageError,
                 std::string(name) + "=" + *text + " is not an integer in [" + std::to_string(low) +
                     ", " + std::to_string(high) + "]",
                 "", "fix the launcher's environment");
  return static_cast<int>(value);
}

}  // namespace

std::optional<DistributedEnv> DistributedEnv::from_environment() {
  if (!env_of("RANK")) return std::nullopt;
  DistributedEnv env;
  env.world_size = env_int("WORLD_SIZE", 1, 1 << 20);
  env.rank = env_int("RANK", 0, env.world_size - 1);
  env.local_rank = env_of("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, env.world_size - 1) : env.rank;
  env.local_world_size =
      env_of("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", 1, env.world_size) : env.world_size;
  if (env.world_size > 1) {
    auto addr = env_of("MASTER_ADDR");
    if (!addr)
      SEGICL_THROW(UsageError, "RANK is set but MASTER_ADDR is not", "",
                   "export MASTER_ADDR=<host of rank 0>");
    env.master_addr = *addr;
    env.master_port = env_int("MASTER_PORT", 1, 65535);
  }
  return env;
}

uint64_t parameter_digest(const std::vector<torch::Tensor>& parameters) {
  uint64_t hash = 14695981039346656037ull;
  for (const auto& p : parameters) {
    auto bytes = p.detach().to(torch::kCPU).contiguous();
    const auto* data = static_cast<const unsigned char*>(bytes.data_ptr());
    const size_t size = bytes.numel() * bytes.element_size();
    for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
  }
  return hash;
}

#ifndef SEGICL_HAVE_C10D

bool distributed_available() { return false; }
std::string distributed_backends() { return ""; }

struct Communicator::Impl {};

Communicator::Communicator(const DistributedOptions&, const torch::Device&) {
  SEGICL_THROW(
      UsageError, "this segicl was built without c10d, so it cannot train on several processes", "",
      "train with one process, or rebuild with libgloo-dev installed (SEGICL_WITH_DISTRIBUTED=ON)");
}
Communicator::~Communicator() = default;
int Communicator::rank() const { return 0; }
int Communicator::world_size() const { return 1; }
std::string Communicator::backend() const { return ""; }
void Communicator::broadcast(const std::vector<torch::Tensor>&) {}
double Communicator::average_gradients(const std::vector<torch::Tensor>&, double local_loss) {
  return local_loss;
}
std::vector<bool> Communicator::any(const std::vector<bool>& flags) { return flags; }
std::vector<std::string> Communicator::gather_to_root(const std::string&,
                                                      const std::string& value) {
  return {value};
}

#else

// PyTorch 2.x split ProcessGroup into a dispatching front and per-device Backends; Gloo and NCCL
// are Backends there, ProcessGroups in 1.13. The collectives we call have the same signatures.
#if TORCH_VERSION_MAJOR >= 2
using GroupBase = c10d::Backend;
#else
using GroupBase = c10d::ProcessGroup;
#endif

bool distributed_available() { return true; }

std::string distributed_backends() {
  std::string out;
#ifdef SEGICL_HAVE_GLOO
  out += "gloo";
#endif
#ifdef SEGICL_HAVE_NCCL
  out += out.empty() ? "nccl" : ",nccl";
#endif
  return out;
}

struct Communicator::Impl {
  DistributedOptions options;
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<GroupBase> group;
  std::string backend;

  // Every failure of a collective reads the same way: which rank noticed, what c10d said, and
  // what to do. The usual cause is another worker that died first; its own log says why.
  [[noreturn]] void fail(const std::string& what, const std::exception& e) const {
    SEGICL_THROW(Error,
                 "distributed " + what + " failed on rank " + std::to_string(options.env.rank) +
                     " of " + std::to_string(options.env.world_size) + " (" + backend +
                     "): " + first_line(e.what()),
                 "",
                 "another worker probably died or hung (see its log); the job stops after at most "
                 "--dist-timeout " +
                     std::to_string(options.timeout.count()) +
                     " s; continue from the last checkpoint with --resume");
  }
  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  template <typename Work>
  void wait(const Work& work, const std::string& what) const {
    try {
      work->wait(std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout));
    } catch (const std::exception& e) {
      fail(what, e);
    }
  }
};

Communicator::Communicator(const DistributedOptions& options, const torch::Device& device)
    : impl_(std::make_unique<Impl>()) {
  // A rank that dies closes its sockets, and the next write of a surviving rank to one of them
  // (Gloo's writev, the store's send) raises SIGPIPE, whose default action killed that rank
  // silently: exit 141 and no message, seen once in Distributed.KilledWorkerFailsTheJobAtOnce.
  // Ignored, the write fails with EPIPE, the collective throws, and fail() reports it with a hint.
  std::signal(SIGPIPE, SIG_IGN);
  auto& env = options.env;
  impl_->options = options;
  impl_->device = device;
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout);
  auto logger = log::get("train");
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = env.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    impl_->store = tcp;
  } catch (const std::exception& e) {
    SEGICL_THROW(
        Error,
        "rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
            " failed on rank " + std::to_string(env.rank) + ": " + Impl::first_line(e.what()),
        "",
        "check MASTER_ADDR/MASTER_PORT, that all " + std::to_string(env.world_size) +
            " ranks started within --dist-timeout, and that the port is free and reachable");
  }
  // The process group's keys under their own prefix, should the store ever hold others.
  auto group_store = c10::make_intrusive<c10d::PrefixStore>("pg", impl_->store);
  try {
    if (device.is_cuda()) {
#ifdef SEGICL_HAVE_NCCL
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      impl_->backend = "nccl";
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(group_store, env.rank,
                                                                 env.world_size, nccl_options);
#else
      SEGICL_THROW(UsageError,
                   "this segicl has no NCCL backend for CUDA training on several processes", "",
                   "build against a CUDA LibTorch (scripts/gpu-build.sh) or pass --device cpu");
#endif
    } else {
#ifdef SEGICL_HAVE_GLOO
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
      // Loopback jobs bind to 127.0.0.1; multi-host jobs to GLOO_SOCKET_IFNAME (as
      // torch.distributed reads it) or to the address the host name resolves to.
      const bool loopback = env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0;
      if (loopback)
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else if (auto interface = env_of("GLOO_SOCKET_IFNAME"))
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(*interface));
      else
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      gloo_options->threads = 2;
      impl_->backend = "gloo";
      impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(group_store, env.rank,
                                                                 env.world_size, gloo_options);
#else
      SEGICL_THROW(UsageError,
                   "this segicl has no Gloo backend for CPU training on several processes", "",
                   "pass --device cuda, or rebuild with libgloo-dev installed");
#endif
    }
  } catch (const segicl::Error&) {
    throw;
  } catch (const std::exception& e) {
    impl_->fail("process group set-up", e);
  }
  logger->debug("rank {} of {} joined {}:{} ({})", env.rank, env.world_size, env.master_addr,
                env.master_port, impl_->backend);
}

Communicator::~Communicator() = default;

int Communicator::rank() const { return impl_->options.env.rank; }
int Communicator::world_size() const { return impl_->options.env.world_size; }
std::string Communicator::backend() const { return impl_->backend; }

namespace {

// Consecutive runs of same-dtype tensors of at most `bucket_bytes` (a larger tensor gets its own
// bucket): one collective per bucket instead of one per tensor, as DDP does.
std::vector<std::vector<size_t> > make_buckets(const std::vector<torch::Tensor>& tensors,
                                               int64_t bucket_bytes) {
  std::vector<std::vector<size_t> > buckets;
  int64_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t size = tensors[i].numel() * tensors[i].element_size();
    const bool fits = !buckets.empty() &&
                      tensors[buckets.back().front()].dtype() == tensors[i].dtype() &&
                      bytes + size <= bucket_bytes;
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += size;
  }
  return buckets;
}

}  // namespace

void Communicator::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const auto& bucket : make_buckets(tensors, impl_->options.bucket_bytes)) {
    std::vector<torch::Tensor> parts;
    for (size_t i : bucket) parts.push_back(tensors[i].detach().reshape(-1));
    std::vector<torch::Tensor> flat{torch::cat(parts).to(impl_->device)};
    c10d::BroadcastOptions options;
    options.rootRank = 0;
    impl_->wait(impl_->group->broadcast(flat, options), "broadcast of the parameters");
    int64_t offset = 0;
    for (size_t i : bucket) {
      auto& t = tensors[i];
      t.detach().copy_(flat[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

double Communicator::average_gradients(const std::vector<torch::Tensor>& parameters,
                                       double local_loss) {
  torch::NoGradGuard no_grad;
  const auto buckets = make_buckets(parameters, impl_->options.bucket_bytes);
  // One small float64 vector rides along: which parameters have a gradient here, and the loss.
  const int64_t count = static_cast<int64_t>(parameters.size());
  auto control = torch::zeros({count + 1}, torch::kFloat64);
  auto flags = control.accessor<double, 1>();
  for (int64_t i = 0; i < count; ++i) flags[i] = parameters[i].grad().defined() ? 1.0 : 0.0;
  flags[count] = local_loss;
  std::vector<std::vector<torch::Tensor> > flats;
  std::vector<c10::intrusive_ptr<c10d::Work> > works;
  c10d::AllreduceOptions sum;
  sum.reduceOp = c10d::ReduceOp::SUM;
  // Launch every bucket before waiting on any: Gloo's worker threads then move one bucket while
  // the next is being flattened.
  for (const auto& bucket : buckets) {
    std::vector<torch::Tensor> parts;
    for (size_t i : bucket) {
      const auto& p = parameters[i];
      parts.push_back(p.grad().defined() ? p.grad().reshape(-1)
                                         : torch::zeros({p.numel()}, p.options()));
    }
    flats.push_back({torch::cat(parts)});
    works.push_back(impl_->group->allreduce(flats.back(), sum));
  }
  std::vector<torch::Tensor> control_flat{control.to(impl_->device)};
  works.push_back(impl_->group->allreduce(control_flat, sum));
  for (auto& work : works) impl_->wait(work, "all-reduce of the gradients");

  auto reduced = control_flat[0].cpu();
  auto any_grad = reduced.accessor<double, 1>();
  const double world = impl_->options.env.world_size;
  for (size_t b = 0; b < buckets.size(); ++b) {
    auto& flat = flats[b][0];
    flat.div_(world);
    int64_t offset = 0;
    for (size_t i : buckets[b]) {
      auto p = parameters[i];
      auto mean = flat.narrow(0, offset, p.numel()).view_as(p);
      offset += p.numel();
      if (any_grad[i] == 0) continue;  // no rank used it: leave it without a gradient
      if (p.grad().defined())
        p.mutable_grad().copy_(mean);
      else
        p.mutable_grad() = mean.clone();
    }
  }
  return any_grad[count] / world;
}

std::vector<bool> Communicator::any(const std::vector<bool>& flags) {
  auto local = torch::zeros({static_cast<int64_t>(flags.size())});
  for (size_t i = 0; i < flags.size(); ++i) local[i] = flags[i] ? 1.0f : 0.0f;
  std::vector<torch::Tensor> vote{local.to(impl_->device)};
  c10d::AllreduceOptions sum;
  sum.reduceOp = c10d::ReduceOp::SUM;
  impl_->wait(impl_->group->allreduce(vote, sum), "stop vote");
  auto total = vote[0].cpu();
  std::vector<bool> out(flags.size());
  for (size_t i = 0; i < flags.size(); ++i) out[i] = total[i].item<float>() > 0;
  return out;
}

std::vector<std::string> Communicator::gather_to_root(const std::string& name,
                                                      const std::string& value) {
  // Through the process group, not the TCPStore: a store get() for the key of a rank that died
  // waits out the whole --dist-timeout (the store's server does not notice a client leaving),
  // while Gloo fails at once on the dead peer's closed socket. Two all-gathers: the lengths, then
  // the bytes padded to the longest.
  const int rank = impl_->options.env.rank, world = impl_->options.env.world_size;
  auto all_gather = [&](const torch::Tensor& local) {
    std::vector<torch::Tensor> input{local.to(impl_->device)};
    std::vector<std::vector<torch::Tensor> > output(1);
    for (int r = 0; r < world; ++r) output[0].push_back(torch::empty_like(input[0]));
    impl_->wait(impl_->group->allgather(output, input), "gather of " + name);
    return output[0];
  };
  auto lengths = all_gather(torch::full({1}, static_cast<int64_t>(value.size()), torch::kInt64));
  int64_t longest = 0;
  for (const auto& length : lengths) longest = std::max(longest, length.cpu().item<int64_t>());
  auto padded = torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8);
  std::memcpy(padded.data_ptr(), value.data(), value.size());
  auto bytes = all_gather(padded);
  std::vector<std::string> out;
  if (rank != 0) return out;
  for (int r = 0; r < world; ++r) {
    auto host = bytes[r].cpu();
    out.emplace_back(static_cast<const char*>(host.data_ptr()),
                     static_cast<size_t>(lengths[r].cpu().item<int64_t>()));
  }
  return out;
}

#endif  // SEGICL_HAVE_C10D

}  // namespace segicl::train
