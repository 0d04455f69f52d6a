// Crash safety of segicl's file outputs: `segicl train`, `segicl pack` and `segicl segment -o` are
// killed with SIGKILL at random moments and the final names must then hold either nothing or a
// complete, loadable file (issue 8). Drives the built binary; not a fuzzer, not a unit test.
//
// SEGICL_CRASH_KILLS (default 24) sets the number of train kills; SEGICL_CRASH_SEED fixes the kill
// delays (default: random, printed). The last summary line is what reports/RELIABILITY.md quotes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../train/toy_pack.h"
#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/data/pack.h"
#include "segicl/io/volume.h"
#include "segicl/models/checkpoint.h"
#include "segicl/models/config.h"

extern char** environ;

namespace segicl {
namespace {

namespace fs = std::filesystem;

// A process of the built binary with stdout+stderr in `log`.
struct Child {
  pid_t pid = -1;
  fs::path log;
};

Child spawn(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> full{SEGICL_BIN, "--threads", "1"};
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  Child child{-1, log};
  const int error = posix_spawn(&child.pid, SEGICL_BIN, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) child.pid = -1;
  return child;
}

// Waits for the child; returns its exit code, or 128 + signal.
int wait_for(Child& child) {
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  child.pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run_to_end(const std::vector<std::string>& args, const fs::path& log) {
  Child child = spawn(args, log);
  return child.pid > 0 ? wait_for(child) : -1;
}

// Sleeps `delay`, then SIGKILLs the child unless it already ended. True if the kill landed.
bool kill_after(Child& child, std::chrono::milliseconds delay) {
  const auto deadline = std::chrono::steady_clock::now() + delay;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(child.pid, &status, WNOHANG) == child.pid) {
      child.pid = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child.pid, SIGKILL);
  wait_for(child);
  return true;
}

uint64_t seed_from_environment() {
  if (const char* s = std::getenv("SEGICL_CRASH_SEED"); s && *s) return std::stoull(s);
  return std::random_device{}();
}

int kills_from_environment() {
  if (const char* s = std::getenv("SEGICL_CRASH_KILLS"); s && *s) return std::stoi(s);
  return 24;
}

std::string tail_of(const fs::path& log) {
  std::string text = fs::exists(log) ? read_file(log.string()) : "";
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

// Files in `dir` other than the expected outputs: temp files a killed writer left behind.
int count_temp_files(const fs::path& dir) {
  int n = 0;
  if (!fs::is_directory(dir)) return 0;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp") != std::string::npos) ++n;
  return n;
}

// True if `dir` holds a temp file of process `pid`: that writer was killed inside a write.
bool temp_of(const fs::path& dir, pid_t pid) {
  const std::string mark = ".tmp" + std::to_string(pid);
  // A writer killed before it created its folder (e.g. train's run folder) left no temp file.
  if (!fs::is_directory(dir)) return false;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.find(mark);
    if (at != std::string::npos &&
        (at + mark.size() == name.size() || !std::isdigit(name[at + mark.size()])))
      return true;
  }
  return false;
}

class CrashSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segicl_crash_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);  // a failure keeps the evidence
  }
  fs::path dir_;
};

TEST_F(CrashSafety, TrainKilledAtRandomMomentsAlwaysLeavesALoadableCheckpointAndResumes) {
  const std::string pack = train::testing::write_toy_pack(dir_);
  const fs::path run = dir_ / "run";
  const fs::path checkpoint = run / "checkpoint.pt";
  const fs::path log = dir_ / "train.log";
  const uint64_t seed = seed_from_environment();
  const int kills_wanted = kills_from_environment();
  std::mt19937_64 rng(seed);
  // Start-up takes ~1 s here and a tiny step with its checkpoint ~40 ms: delays past start-up
  // land in steps and in checkpoint writes alike; a few short ones land before the first.
  std::uniform_int_distribution<int> delay_ms(200, 2200);
  const std::vector<std::string> base{"train",
                                      "--preset",
                                      "crossconv-tiny",
                                      "--pack",
                                      pack,
                                      "-o",
                                      run.string(),
                                      "--steps",
                                      "100000",
                                      "--batch-size",
                                      "1",
                                      "--checkpoint-every",
                                      "1",
                                      "--log-every",
                                      "50"};
  int kills = 0, resumes = 0, fresh_starts = 0, finished_early = 0, attempts = 0, in_write = 0;
  int64_t last_step = 0;
  while (kills < kills_wanted && attempts < 3 * kills_wanted) {
    ++attempts;
    std::vector<std::string> args = base;
    if (fs::exists(checkpoint)) {
      args.push_back("--resume");
      ++resumes;
    } else {
      ++fresh_starts;
    }
    Child child = spawn(args, log);
    ASSERT_GT(child.pid, 0) << "cannot run " << SEGICL_BIN;
    const pid_t pid = child.pid;
    if (kill_after(child, std::chrono::milliseconds(delay_ms(rng)))) {
      ++kills;
      in_write += temp_of(run, pid) ? 1 : 0;
    } else {
      ++finished_early;  // it exited by itself: an error, shown below
      ADD_FAILURE() << "train exited before the kill:\n" << tail_of(log);
      break;
    }
    // The final name holds nothing (killed before the first checkpoint) or a whole checkpoint.
    if (!fs::exists(checkpoint)) {
      EXPECT_EQ(last_step, 0) << "checkpoint.pt vanished after it existed";
      continue;
    }
    try {
      auto loaded = models::load_checkpoint(checkpoint.string(), torch::kCPU);
      const int64_t step = loaded.meta.value("step", static_cast<int64_t>(-1));
      EXPECT_GE(step, last_step) << "a resumed run went back in time";
      last_step = step;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "kill " << kills << ": checkpoint.pt is not loadable: " << e.what();
      break;
    }
  }
  EXPECT_GE(kills, kills_wanted);
  EXPECT_GT(last_step, 0) << "no kill came after the first checkpoint";
  // After all that, --resume still trains to the end.
  ASSERT_TRUE(fs::exists(checkpoint));
  const int64_t target = last_step + 3;
  auto args = base;
  args[8] = std::to_string(target);  // --steps
  args.push_back("--resume");
  ++resumes;
  ASSERT_EQ(run_to_end(args, log), 0) << tail_of(log);
  EXPECT_EQ(models::read_checkpoint_meta(checkpoint.string()).value("step", int64_t{-1}), target);
  // Kills leave temps behind; the next checkpoint write removes those of dead processes.
  EXPECT_EQ(count_temp_files(run), 0) << "stale checkpoint temps pile up in the run folder";
  // The appended log reads as one run: whole lines, each logged step once, in order.
  {
    std::ifstream csv(run / "log.csv");
    std::string line;
    ASSERT_TRUE(std::getline(csv, line));
    EXPECT_EQ(line.rfind("step,", 0), 0u) << "log.csv must start with its header: " << line;
    long long previous = 0;
    while (std::getline(csv, line)) {
      EXPECT_EQ(std::count(line.begin(), line.end(), ','), 5) << "a partial line in log.csv: " << line;
      const long long step = std::atoll(line.c_str());
      EXPECT_GT(step, previous) << "log.csv repeats or reorders steps: " << line;
      previous = step;
    }
    EXPECT_EQ(previous, static_cast<long long>(target)) << "the final resume's last row";
  }
  std::printf(
      "crash-safety train: seed %llu, %d kills (%d inside a checkpoint write), %d resumes, %d "
      "fresh starts, %d early exits, reached step %lld, %d temp files left after the final "
      "resume, failures %d\n",
      static_cast<unsigned long long>(seed), kills, in_write, resumes, fresh_starts, finished_early,
      static_cast<long long>(target), count_temp_files(run), HasFailure() ? 1 : 0);
}

// Writes a copy of `from` with `edit` applied to its bytes.
fs::path damaged_copy(const fs::path& from, const fs::path& to,
                      const std::function<void(std::string&)>& edit) {
  std::string bytes = read_file(from.string());
  edit(bytes);
  std::ofstream(to, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return to;
}

TEST_F(CrashSafety, TruncatedOrByteFlippedCheckpointIsRefusedNamingTheFile) {
  torch::manual_seed(0);
  models::SegICLModel model(models::load_preset("crossconv-tiny"));
  const fs::path good = dir_ / "good.pt";
  models::save_checkpoint(good.string(), *model, config::Json::object());
  ASSERT_NO_THROW(models::load_checkpoint(good.string(), torch::kCPU));
  const size_t size = fs::file_size(good);
  std::vector<fs::path> bad{
      damaged_copy(good, dir_ / "truncated.pt", [](std::string& b) { b.resize(b.size() / 2); }),
      damaged_copy(good, dir_ / "tail_cut.pt", [](std::string& b) { b.resize(b.size() - 10); })};
  // Flips inside tensor data: the zip container itself stays valid, only a CRC can tell.
  for (double at : {0.25, 0.5, 0.75})
    bad.push_back(damaged_copy(good, dir_ / ("flipped_" + std::to_string(int(at * 100)) + ".pt"),
                               [&](std::string& b) { b[static_cast<size_t>(at * size)] ^= 0x5a; }));
  for (const auto& path : bad) {
    SCOPED_TRACE(path.filename().string());
    try {
      models::load_checkpoint(path.string(), torch::kCPU);
      ADD_FAILURE() << "a damaged checkpoint loaded";
    } catch (const FormatError& e) {
      EXPECT_EQ(e.file(), path.string());
    }
    // The CLI refuses it too, with exit code 3 and the file named.
    const fs::path log = dir_ / (path.filename().string() + ".log");
    EXPECT_EQ(run_to_end({"model", "export", path.string(), (dir_ / "out.pt").string()}, log), 3);
    EXPECT_NE(tail_of(log).find(path.string()), std::string::npos) << tail_of(log);
  }
  // A run folder whose checkpoint was damaged is not resumed from it.
  const fs::path run = dir_ / "run";
  fs::create_directories(run);
  fs::copy_file(dir_ / "flipped_50.pt", run / "checkpoint.pt");
  const std::string pack = train::testing::write_toy_pack(dir_);
  const fs::path log = dir_ / "resume.log";
  EXPECT_EQ(run_to_end({"train", "--pack", pack, "-o", run.string(), "--resume"}, log), 3);
  EXPECT_NE(tail_of(log).find((run / "checkpoint.pt").string()), std::string::npos) << tail_of(log);
}

// A corpus of one dataset: the CHAOS sample volumes, each listed several times so that packing
// takes long enough (a few seconds) to be killed in the middle.
fs::path sample_corpus(const fs::path& root, int copies) {
  const fs::path samples = fs::path(SEGICL_SOURCE_DIR) / "data" / "samples" / "chaos_mr_t2";
  const fs::path d = root / "corpus" / "chaos_mr_t2";
  fs::create_directories(d);
  fs::create_directory_symlink(samples / "images", d / "images");
  fs::create_directory_symlink(samples / "labels", d / "labels");
  config::Json cases = config::Json::array();
  for (int i = 0; i < copies; ++i)
    for (const char* p : {"p01", "p02"})
      cases.push_back({{"id", std::string("c") + std::to_string(i) + p},
                       {"group", std::string("g") + std::to_string(i) + p},
                       {"image", std::string("images/chaos_mr_t2_") + p + ".nii.gz"},
                       {"label", std::string("labels/chaos_mr_t2_") + p + ".nii.gz"}});
  config::Json json{{"name", "chaos_mr_t2"},
                    {"modality", "MR"},
                    {"dims", 3},
                    {"labels", {{"1", "liver"}}},
                    {"cases", cases}};
  write_file_atomic((d / "dataset.json").string(), json.dump(1));
  return root / "corpus";
}

// Times one uninterrupted run of `args` (it must succeed), then runs it `runs` more times, each
// SIGKILLed at a random moment clustered at the end of the run, where the output is written. After
// every kill, `check_output` inspects the final file when one exists (never a partial one).
struct KillCounts {
  int full_ms = 0, kills = 0, complete = 0, in_write = 0;
};

KillCounts kill_near_the_end(const std::vector<std::string>& args, const fs::path& log,
                             const fs::path& dir, const fs::path& out, uint64_t seed,
                             const std::function<void()>& after_full_run,
                             const std::function<void()>& check_output) {
  KillCounts counts;
  const auto start = std::chrono::steady_clock::now();
  if (run_to_end(args, log) != 0) {
    ADD_FAILURE() << "the uninterrupted run failed:\n" << tail_of(log);
    return counts;
  }
  counts.full_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - start)
                                        .count());
  after_full_run();
  if (::testing::Test::HasFatalFailure()) return counts;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(counts.full_ms * 4 / 5, counts.full_ms + 30);
  for (int i = 0; i < 6; ++i) {
    fs::remove(out);
    Child child = spawn(args, log);
    EXPECT_GT(child.pid, 0);
    if (child.pid <= 0) break;
    const pid_t pid = child.pid;
    counts.kills += kill_after(child, std::chrono::milliseconds(delay_ms(rng))) ? 1 : 0;
    counts.in_write += temp_of(dir, pid) ? 1 : 0;
    if (!fs::exists(out)) continue;
    ++counts.complete;
    check_output();
  }
  return counts;
}

TEST_F(CrashSafety, PackKilledWhileWritingLeavesNoFileOrAWholePack) {
  const fs::path corpus = sample_corpus(dir_, 4);
  const fs::path out = dir_ / "eval.pack";
  const fs::path log = dir_ / "pack.log";
  const std::vector<std::string> args{"--data", corpus.string(), "pack",   "--purpose", "eval",
                                      "-o",     out.string(),    "--force"};
  // Time one whole run, then kill at random points spread over it (the last ones land in the
  // write itself).
  const auto counts = kill_near_the_end(
      args, log, dir_, out, seed_from_environment(),
      [&] { ASSERT_NO_THROW(data::Pack::open(out.string())); },
      [&] {
        EXPECT_NO_THROW(data::Pack::open(out.string()))
            << "a half-written pack under the final name";
      });
  const int kills = counts.kills, full_ms = counts.full_ms, in_write = counts.in_write,
            complete = counts.complete;
  std::printf(
      "crash-safety pack: %d kills over a %d ms run (%d inside the write), %d left a complete "
      "pack, none a partial one\n",
      kills, full_ms, in_write, complete);
  EXPECT_GT(kills, 0);
}

TEST_F(CrashSafety, SegmentKilledWhileWritingLeavesNoMaskOrAWholeMask) {
  torch::manual_seed(0);
  models::SegICLModel model(models::load_preset("crossconv-tiny"));
  const fs::path checkpoint = dir_ / "tiny.pt";
  models::save_checkpoint(checkpoint.string(), *model, config::Json::object());
  const fs::path samples = fs::path(SEGICL_SOURCE_DIR) / "data" / "samples" / "chaos_mr_t2";
  const fs::path out = dir_ / "mask.nii.gz";
  const fs::path log = dir_ / "segment.log";
  const std::vector<std::string> args{"segment",
                                      (samples / "images" / "chaos_mr_t2_p02.nii.gz").string(),
                                      "-o",
                                      out.string(),
                                      "--model",
                                      checkpoint.string(),
                                      "--example",
                                      (samples / "images" / "chaos_mr_t2_p01.nii.gz").string(),
                                      (samples / "labels" / "chaos_mr_t2_p01.nii.gz").string(),
                                      "--force"};
  io::LabelMap reference;
  const auto counts = kill_near_the_end(
      args, log, dir_, out, seed_from_environment() + 1,
      [&] { reference = io::read_labels(out.string()); },
      [&] {
        try {
          EXPECT_EQ(io::read_labels(out.string()).labels, reference.labels);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "a half-written mask under the final name: " << e.what();
        }
      });
  const int kills = counts.kills, full_ms = counts.full_ms, in_write = counts.in_write,
            complete = counts.complete;
  std::printf(
      "crash-safety segment: %d kills over a %d ms run (%d inside the write), %d left a complete "
      "mask, none a partial one\n",
      kills, full_ms, in_write, complete);
  EXPECT_GT(kills, 0);
}

}  // namespace
}  // namespace segicl
