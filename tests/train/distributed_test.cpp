// Data-parallel training end to end: the built `segicl` binary runs as 1 or 2 processes on loopback
// (Gloo) over a tiny pack, 1 thread each. Slow (label: integration); skipped without c10d.
#include "segicl/train/distributed.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>
#include <tuple>

#include "segicl/core/error.h"
#include "segicl/models/checkpoint.h"
#include "toy_pack.h"

extern char** environ;

namespace segicl::train {
namespace fs = std::filesystem;

namespace {

// A child process running the segicl binary; stdout and stderr go to `log`.
struct Child {
  pid_t pid = -1;
  fs::path log;
};

Child spawn_segicl(const std::vector<std::string>& args, const fs::path& log,
                   const std::vector<std::string>& extra_env = {}, const std::string& binary = SEGICL_BIN) {
  std::vector<std::string> storage{binary};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    // The test's own environment must not make the children ranks of some other job.
    bool distributed = entry.rfind("RANK=", 0) == 0 || entry.rfind("WORLD_SIZE=", 0) == 0 ||
                       entry.rfind("LOCAL_RANK=", 0) == 0 || entry.rfind("MASTER_", 0) == 0;
    if (!distributed) env_storage.push_back(entry);
  }
  env_storage.insert(env_storage.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  Child child;
  child.log = log;
  int error = posix_spawn(&child.pid, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot start " + binary);
  return child;
}

// Waits for the child; returns its exit code (128 + signal when killed).
int wait_for(const Child& child) {
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string text_of(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Polls `path` until it contains `needle` (true) or `seconds` pass (false).
bool wait_for_text(const fs::path& path, const std::string& needle, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (text_of(path).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

double largest_difference(const std::vector<torch::Tensor>& a,
                          const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!distributed_available())
      GTEST_SKIP() << "built without c10d (SEGICL_WITH_DISTRIBUTED=OFF)";
    dir_ = fs::temp_directory_path() / ("segicl_ddp_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    pack_ = testing::write_toy_pack(dir_);
  }
  // SEGICL_TEST_KEEP=1 keeps the run folders and logs for a look after the test.
  void TearDown() override {
    if (!std::getenv("SEGICL_TEST_KEEP")) fs::remove_all(dir_);
  }

  // Common flags of a few-step CPU run (1 thread per process, as the benchmark).
  std::vector<std::string> train_args(const std::string& preset, const std::string& out, int batch,
                                      int steps) {
    return {"--threads",
            "1",
            "--quiet",
            "train",
            "--preset",
            preset,
            "--pack",
            pack_,
            "--out",
            (dir_ / out).string(),
            "--device",
            "cpu",
            "--steps",
            std::to_string(steps),
            "--batch-size",
            std::to_string(batch),
            "--warmup",
            "1",
            "--log-every",
            "1",
            "--checkpoint-every",
            "2",
            "--max-context",
            "2",
            "--dist-timeout",
            "30"};
  }
  int run(std::vector<std::string> args, const std::string& log_name, const std::string& binary = SEGICL_BIN) {
    auto child = spawn_segicl(args, dir_ / log_name, {}, binary);
    int code = wait_for(child);
    if (code != 0) ADD_FAILURE() << log_name << ":\n" << text_of(child.log);
    return code;
  }
  std::vector<torch::Tensor> weights_of(const std::string& out) {
    auto loaded = models::load_checkpoint((dir_ / out / "checkpoint.pt").string());
    std::vector<torch::Tensor> weights;
    for (auto& p : loaded.model->parameters()) weights.push_back(p.detach().clone());
    return weights;
  }

  std::tuple<int, double, std::string> disturb_rank_one(int signal, int timeout_seconds);

  fs::path dir_;
  std::string pack_;
};

}  // namespace

TEST(DistributedEnv, IsAbsentWithoutRankAndReadsTorchrunVariables) {
  ::unsetenv("RANK");
  EXPECT_FALSE(DistributedEnv::from_environment().has_value());
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "node0", 1);
  ::setenv("MASTER_PORT", "29500", 1);
  auto env = DistributedEnv::from_environment();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->rank, 1);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->local_world_size, 2);
  EXPECT_EQ(env->master_addr, "node0");
  EXPECT_EQ(env->master_port, 29500);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(DistributedEnv::from_environment(), UsageError) << "rank out of range";
  ::setenv("RANK", "0", 1);
  ::unsetenv("MASTER_PORT");
  EXPECT_THROW(DistributedEnv::from_environment(), UsageError)
      << "a partial environment is refused";
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"})
    ::unsetenv(name);
}

// Two ranks as two threads of this process: the Communicator's collectives without a training run.
DistributedOptions thread_rank(int rank, int port) {
  DistributedOptions options;
  options.env.rank = rank;
  options.env.world_size = 2;
  options.env.local_world_size = 2;
  options.env.master_addr = "127.0.0.1";
  options.env.master_port = port;
  options.timeout = std::chrono::seconds(30);
  return options;
}

int thread_port(int salt) { return 30000 + (::getpid() * 7 + salt) % 1000; }

TEST(Communicator, GatherToRootHandsRankZeroEveryRanksBytesInRankOrder) {
  if (!distributed_available()) GTEST_SKIP() << "built without c10d";
  const int port = thread_port(1);
  // Unequal lengths, an empty value and a zero byte inside: the padding must not leak.
  const std::string mine = std::string("rank zero\0state", 15), theirs;
  std::vector<std::string> at_one{"untouched"};
  std::thread one([&] {
    Communicator comm(thread_rank(1, port), torch::kCPU);
    at_one = comm.gather_to_root("test", theirs);
  });
  std::vector<std::string> at_zero;
  {
    Communicator comm(thread_rank(0, port), torch::kCPU);
    at_zero = comm.gather_to_root("test", mine);
  }
  one.join();
  ASSERT_EQ(at_zero.size(), 2u);
  EXPECT_EQ(at_zero[0], mine);
  EXPECT_EQ(at_zero[1], theirs);
  EXPECT_TRUE(at_one.empty()) << "only rank 0 receives";
}

TEST(Communicator, GatherFailsAtOnceWhenAPeerHasLeft) {
  // Rank 1 joins, then goes away (its sockets close) before the gather of a checkpoint: rank 0
  // must fail at once with the hint, not wait out the 30 s timeout (the store-based gather did:
  // CI saw a killed worker take 62 s to fail the job).
  if (!distributed_available()) GTEST_SKIP() << "built without c10d";
  const int port = thread_port(2);
  std::thread one([&] { Communicator comm(thread_rank(1, port), torch::kCPU); });
  Communicator comm(thread_rank(0, port), torch::kCPU);
  one.join();
  const auto start = std::chrono::steady_clock::now();
  try {
    comm.gather_to_root("rng", "state");
    ADD_FAILURE() << "the gather succeeded without its peer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gather of rng failed on rank 0 of 2 (gloo)"),
              std::string::npos)
        << e.what();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10) << "waited for the timeout instead of noticing the closed sockets";
}

TEST_F(Distributed, TwoProcessesEndWithBitIdenticalParameters) {
  auto args = train_args("tiny", "ddp", 2, 3);
  args.insert(args.end(), {"--nproc", "2"});
  ASSERT_EQ(run(args, "ddp.log"), 0);
  auto meta = models::read_checkpoint_meta((dir_ / "ddp" / "checkpoint.pt").string());
  EXPECT_EQ(meta["step"], 3);
  ASSERT_TRUE(meta.contains("distributed")) << meta.dump(2);
  EXPECT_EQ(meta["distributed"]["world_size"], 2);
  auto digests = meta["distributed"]["parameter_digests"];
  ASSERT_EQ(digests.size(), 2u);
  EXPECT_EQ(digests[0], digests[1]) << "rank 1's parameters differ from rank 0's";
  // And the checkpoint holds exactly those parameters.
  auto loaded = models::load_checkpoint((dir_ / "ddp" / "checkpoint.pt").string());
  EXPECT_EQ(std::to_string(parameter_digest(loaded.model->parameters())),
            digests[0].get<std::string>());
  // Only rank 0 wrote the run folder's logs: one header and one row per step.
  auto csv = text_of(dir_ / "ddp" / "log.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4) << csv;
}

TEST_F(Distributed, TwoProcessesMatchOneProcessWithTwiceTheBatch) {
  // crossconv: its loss is a mean over episodes and it draws no noise, so the split is exact up to
  // float summation order.
  ASSERT_EQ(run(train_args("crossconv-tiny", "one", 4, 3), "one.log"), 0);
  auto args = train_args("crossconv-tiny", "two", 2, 3);
  args.insert(args.end(), {"--nproc", "2"});
  ASSERT_EQ(run(args, "two.log"), 0);
  auto a = weights_of("one"), b = weights_of("two");
  ASSERT_EQ(a.size(), b.size());
  // Tolerance: 3 AdamW steps at lr 3e-4 move a weight by <= ~1e-3; summation-order noise in the
  // gradients (~1e-7 relative) must stay orders of magnitude below that.
  const double worst = largest_difference(a, b);
  EXPECT_LT(worst, 2e-5) << "largest parameter difference";
  // The comparison has teeth: training on rank 0's half of the episodes alone lands far away.
  ASSERT_EQ(run(train_args("crossconv-tiny", "half", 2, 3), "half.log"), 0);
  const double half = largest_difference(a, weights_of("half"));
  EXPECT_GT(half, 100 * worst) << "2 x 2 differs from 1 x 4 by " << worst << ", 1 x 2 by " << half;
  std::printf("largest difference to 1 x 4: 2 x 2 %.3g, 1 x 2 %.3g\n", worst, half);
}

// torchrun-style: the test starts both ranks itself, lets them train, then sends `signal` to rank 1
// and measures how long rank 0 takes to fail. Returns rank 0's exit code, the seconds and its log.
std::tuple<int, double, std::string> Distributed::disturb_rank_one(int signal,
                                                                   int timeout_seconds) {
  const std::string port = std::to_string(29000 + (::getpid() * 7 + signal) % 1000);
  auto args = train_args("tiny", "disturbed" + std::to_string(signal), 2, 100000);
  args[args.size() - 1] = std::to_string(timeout_seconds);  // --dist-timeout
  args.erase(args.begin() + 2);  // not --quiet: rank 0's progress lines tell when training runs
  std::vector<std::string> common{"WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port};
  auto env0 = common, env1 = common;
  env0.push_back("RANK=0");
  env1.push_back("RANK=1");
  auto rank0 = spawn_segicl(args, dir_ / "rank0.log", env0);
  auto rank1 = spawn_segicl(args, dir_ / "rank1.log", env1);
  if (!wait_for_text(rank0.log, "step 2/", 120)) {
    ::kill(rank0.pid, SIGKILL);
    ::kill(rank1.pid, SIGKILL);
    wait_for(rank0);
    wait_for(rank1);
    return {-1, 0, text_of(rank0.log)};
  }
  ::kill(rank1.pid, signal);
  const auto disturbed_at = std::chrono::steady_clock::now();
  int code = wait_for(rank0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - disturbed_at).count();
  ::kill(rank1.pid, SIGKILL);
  wait_for(rank1);
  return {code, seconds, text_of(rank0.log)};
}

TEST_F(Distributed, KilledWorkerFailsTheJobAtOnce) {
  auto [code, seconds, log] = disturb_rank_one(SIGKILL, 60);
  EXPECT_EQ(code, 1) << log;
  EXPECT_LT(seconds, 15) << "a dead peer closes its sockets: no need to wait for --dist-timeout 60\n"
                         << log;
  EXPECT_NE(log.find("error: distributed"), std::string::npos) << log;
  EXPECT_NE(log.find("failed on rank 0 of 2 (gloo)"), std::string::npos) << log;
  EXPECT_NE(log.find("hint: another worker probably died or hung"), std::string::npos) << log;
}

TEST_F(Distributed, HungWorkerFailsTheJobAfterTheTimeout) {
  auto [code, seconds, log] = disturb_rank_one(SIGSTOP, 5);  // stopped, sockets still open
  EXPECT_EQ(code, 1) << log;
  EXPECT_GT(seconds, 4) << log;
  EXPECT_LT(seconds, 5 + 15)
      << "rank 0 must give up after --dist-timeout 5 (plus the step it was in)";
  EXPECT_NE(log.find("failed on rank 0 of 2 (gloo)"), std::string::npos) << log;
}

TEST_F(Distributed, LauncherStopsTheJobWhenAWorkerDies) {
  auto args = train_args("tiny", "launcher", 2, 100000);
  args.erase(args.begin() + 2);  // not --quiet: the launcher logs the workers' pids
  args.insert(args.end(), {"--nproc", "2"});
  auto job = spawn_segicl(args, dir_ / "launcher.log");
  ASSERT_TRUE(wait_for_text(job.log, "step 2/", 120)) << text_of(job.log);
  std::smatch match;
  auto log = text_of(job.log);
  ASSERT_TRUE(std::regex_search(log, match, std::regex("worker rank 1 of 2: pid ([0-9]+)"))) << log;
  const pid_t worker = std::stoi(match[1]);
  ::kill(worker, SIGKILL);
  EXPECT_EQ(wait_for(job), 1);
  log = text_of(job.log);
  EXPECT_NE(log.find("error: worker rank 1 of 2 (pid " + std::to_string(worker) +
                     ") was killed by signal 9"),
            std::string::npos)
      << log;
}

TEST_F(Distributed, InterruptedJobCheckpointsOnEveryRankAndExits130) {
  auto args = train_args("tiny", "interrupted", 2, 100000);
  args.erase(args.begin() + 2);  // not --quiet: progress lines tell when training runs
  args.insert(args.end(), {"--nproc", "2"});
  auto job = spawn_segicl(args, dir_ / "interrupted.log");
  ASSERT_TRUE(wait_for_text(job.log, "step 2/", 120)) << text_of(job.log);
  ::kill(job.pid, SIGINT);  // what Ctrl-C does to the launcher (the terminal also signals workers)
  EXPECT_EQ(wait_for(job), 130) << text_of(job.log);
  auto meta = models::read_checkpoint_meta((dir_ / "interrupted" / "checkpoint.pt").string());
  EXPECT_GE(meta["step"].get<int>(), 2);
  EXPECT_EQ(meta["distributed"]["parameter_digests"][0],
            meta["distributed"]["parameter_digests"][1]);
}

// Stage 1 of `tiny` draws diffusion noise from each rank's torch RNG, so this also checks that
// every rank's RNG and sampler state come back from the checkpoint.
TEST_F(Distributed, ResumeAtTheSameWorldSizeIsBitExactForBothShardings) {
  for (std::string sharding : {"global", "rank"}) {
    SCOPED_TRACE(sharding);
    auto with_out = [&](const std::string& out, std::vector<std::string> extra) {
      auto args = train_args("tiny", out, 2, 4);
      args.insert(args.end(), {"--nproc", "2", "--episode-sharding", sharding});
      args.insert(args.end(), extra.begin(), extra.end());
      return args;
    };
    ASSERT_EQ(run(with_out("straight-" + sharding, {}), "straight.log"), 0);
    ASSERT_EQ(run(with_out("split-" + sharding, {"--stop-at", "2"}), "split1.log"), 0);
    ASSERT_EQ(run(with_out("split-" + sharding, {"--resume"}), "split2.log"), 0);
    auto a = weights_of("straight-" + sharding), b = weights_of("split-" + sharding);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
  }
}

TEST_F(Distributed, ResumeOnOneProcessContinuesATwoProcessRun) {
  // 2 x 2 episodes for 2 steps, then 1 x 4 for 2 more: the same global batches as 4 steps of 2 x 2.
  auto two = train_args("crossconv-tiny", "split", 2, 4);
  two.insert(two.end(), {"--nproc", "2", "--stop-at", "2"});
  ASSERT_EQ(run(two, "split1.log"), 0);
  auto one = train_args("crossconv-tiny", "split", 2, 4);
  one.push_back("--resume");
  ASSERT_EQ(run(one, "split2.log"), 0);
  auto straight = train_args("crossconv-tiny", "straight", 2, 4);
  straight.insert(straight.end(), {"--nproc", "2"});
  ASSERT_EQ(run(straight, "straight.log"), 0);
  auto a = weights_of("split"), b = weights_of("straight");
  EXPECT_LT(largest_difference(a, b), 2e-5) << "largest parameter difference";
  auto meta = models::read_checkpoint_meta((dir_ / "split" / "checkpoint.pt").string());
  EXPECT_EQ(meta["step"], 4);
  EXPECT_EQ(meta["train"]["batch_size"], 4) << "the global batch of 4 is kept on one process";
}

#ifdef SEGICL_NOITK_BIN
// The GPU machine's build configuration (scripts/gpu-build.sh: no ITK, header-only dependencies
// from the travelling folder), built here by `make noitk` against the same CPU LibTorch: it must
// train exactly like the main build, and refuse image files with a clear error instead of crashing.
using NoItkBuild = Distributed;

TEST_F(NoItkBuild, TrainsBitIdenticallyToTheMainBuild) {
  ASSERT_TRUE(fs::exists(SEGICL_NOITK_BIN)) << SEGICL_NOITK_BIN << " is missing: run `make noitk`";
  ASSERT_EQ(run(train_args("crossconv-tiny", "main", 2, 3), "main.log"), 0);
  ASSERT_EQ(run(train_args("crossconv-tiny", "noitk", 2, 3), "noitk.log", SEGICL_NOITK_BIN), 0);
  auto a = weights_of("main"), b = weights_of("noitk");
  EXPECT_EQ(largest_difference(a, b), 0.0) << "same seed, same LibTorch, 1 thread: the builds must agree";
  // Teeth: a different seed lands elsewhere.
  auto other = train_args("crossconv-tiny", "seed7", 2, 3);
  other.insert(other.end(), {"--seed", "7"});
  ASSERT_EQ(run(other, "seed7.log", SEGICL_NOITK_BIN), 0);
  EXPECT_GT(largest_difference(a, weights_of("seed7")), 0.0);
}

TEST_F(NoItkBuild, RefusesImageFilesWithAClearError) {
  ASSERT_TRUE(fs::exists(SEGICL_NOITK_BIN)) << SEGICL_NOITK_BIN << " is missing: run `make noitk`";
  const std::string sample = std::string(SEGICL_SOURCE_DIR) + "/data/samples/chaos_mr_t2/images/chaos_mr_t2_p02.nii.gz";
  const std::string model = std::string(SEGICL_SOURCE_DIR) + "/models/segicl-crossconv.pt";
  auto child = spawn_segicl({"segment", sample, "--model", model, "-o", (dir_ / "mask.nii.gz").string(), "--text",
                             "segment the liver"},
                            dir_ / "segment.log", {}, SEGICL_NOITK_BIN);
  const int code = wait_for(child);
  const std::string log = text_of(child.log);
  EXPECT_GT(code, 0) << log;
  EXPECT_LT(code, 128) << "killed by a signal:\n" << log;
  EXPECT_NE(log.find("ITK"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir_ / "mask.nii.gz"));
}
#endif

}  // namespace segicl::train
