#include "segicl/train/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "segicl/core/error.h"
#include "segicl/models/checkpoint.h"
#include "toy_pack.h"

namespace segicl::train {
namespace fs = std::filesystem;

namespace {

using testing::write_toy_pack;

class Trainer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segicl_train_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    pack_ = write_toy_pack(dir_);
    options_.preset = "tiny";
    options_.pack = pack_;
    options_.batch_size = 2;
    options_.log_every = 1;
    options_.checkpoint_every = 2;
    options_.warmup_steps = 1;
    options_.device = "cpu";
    options_.episodes.max_context = 2;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<torch::Tensor> weights_of(const std::string& checkpoint) {
    auto loaded = models::load_checkpoint(checkpoint);
    std::vector<torch::Tensor> out;
    for (auto& p : loaded.model->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  fs::path dir_;
  std::string pack_;
  TrainOptions options_;
};

}  // namespace

TEST_F(Trainer, StageOneWritesCheckpointLogAndResolvedConfig) {
  options_.steps = 3;
  auto result = run_training(options_, (dir_ / "s1").string(), false);
  EXPECT_EQ(result.step, 3);
  EXPECT_TRUE(fs::exists(dir_ / "s1" / "checkpoint.pt"));
  EXPECT_TRUE(fs::exists(dir_ / "s1" / "log.csv"));
  EXPECT_TRUE(fs::exists(dir_ / "s1" / "config.resolved.json"));
  auto meta = models::read_checkpoint_meta((dir_ / "s1" / "checkpoint.pt").string());
  EXPECT_EQ(meta["stage"], 1);
  EXPECT_EQ(meta["step"], 3);
  EXPECT_THROW(run_training(options_, (dir_ / "s1").string(), false), UsageError) << "never overwrite a run";
}

TEST_F(Trainer, ResumeIsExact) {
  options_.steps = 4;
  run_training(options_, (dir_ / "straight").string(), false);
  options_.stop_at = 2;  // an interrupted run: same schedule, stopped half-way
  EXPECT_EQ(run_training(options_, (dir_ / "split").string(), false).step, 2);
  options_.stop_at = 0;
  EXPECT_EQ(run_training(options_, (dir_ / "split").string(), true).step, 4);
  auto a = weights_of((dir_ / "straight" / "checkpoint.pt").string());
  auto b = weights_of((dir_ / "split" / "checkpoint.pt").string());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

// What a kill after the last checkpoint leaves: log rows of steps the resume trains again, and a
// half-written last line. The resumed run's logs must read as one run: each step once, whole lines.
// --sample-on is where the run works, like --device: a resume takes the one it is given, and a
// name it does not know is refused before anything is written.
TEST_F(Trainer, SampleOnIsCheckedAndAResumeTakesTheRequestedOne) {
  options_.steps = 2;
  options_.sample_on = "gpu";
  EXPECT_THROW(run_training(options_, (dir_ / "bad").string(), false), UsageError);
  EXPECT_FALSE(fs::exists(dir_ / "bad" / "checkpoint.pt"));
  options_.sample_on = "device";  // the training device: the CPU here
  EXPECT_EQ(run_training(options_, (dir_ / "run").string(), false).step, 2);
  options_.steps = 3;
  options_.sample_on = "host";
  EXPECT_EQ(run_training(options_, (dir_ / "run").string(), true).step, 3);
  auto meta = models::read_checkpoint_meta((dir_ / "run" / "checkpoint.pt").string());
  EXPECT_EQ(meta["train"]["sample_on"], "host");
}

TEST_F(Trainer, ResumeDropsLogRowsPastTheCheckpointAndAHalfWrittenLine) {
  options_.steps = 4;
  options_.stop_at = 2;
  run_training(options_, (dir_ / "killed").string(), false);
  {
    std::ofstream csv(dir_ / "killed" / "log.csv", std::ios::app);
    csv << "3,0.5,0.001,2.0,1.0,\n4,0.4";  // step 3 trained after the checkpoint, then a kill mid-line
    std::ofstream metrics(dir_ / "killed" / "metrics.jsonl", std::ios::app);
    metrics << "{\"step\":3,\"loss\":0.5}\n{\"step\":4,\"lo";
  }
  options_.stop_at = 0;
  run_training(options_, (dir_ / "killed").string(), true);

  auto lines_of = [](const fs::path& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  auto csv = lines_of(dir_ / "killed" / "log.csv");
  ASSERT_EQ(csv.size(), 5u) << "header and steps 1-4";
  EXPECT_EQ(csv[0].rfind("step,loss,", 0), 0u);
  for (int step = 1; step <= 4; ++step) {
    EXPECT_EQ(csv[step].rfind(std::to_string(step) + ",", 0), 0u) << csv[step];
    EXPECT_EQ(std::count(csv[step].begin(), csv[step].end(), ','), 5) << csv[step];
  }
  auto metrics = lines_of(dir_ / "killed" / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 4u);
  for (int step = 1; step <= 4; ++step) {
    auto record = config::Json::parse(metrics[step - 1]);  // throws on a half-written line
    EXPECT_EQ(record.at("step"), step);
    EXPECT_TRUE(record.contains("steps_per_second")) << "the planted row of step 3 must be gone";
  }
}

TEST_F(Trainer, StageTwoStartsFromStageOneAndKeepsTheDecoderFrozen) {
  options_.steps = 2;
  run_training(options_, (dir_ / "s1").string(), false);
  TrainOptions two = options_;
  two.stage = 2;
  two.init_checkpoint = (dir_ / "s1" / "checkpoint.pt").string();
  two.steps = 2;
  run_training(two, (dir_ / "s2").string(), false);
  auto s1 = models::load_checkpoint((dir_ / "s1" / "checkpoint.pt").string());
  auto s2 = models::load_checkpoint((dir_ / "s2" / "checkpoint.pt").string());
  auto p1 = s1.model->denoiser->named_parameters(), p2 = s2.model->denoiser->named_parameters();
  for (const auto& p : p1) EXPECT_TRUE(torch::equal(p.value(), p2[p.key()])) << p.key();
  bool moved = false;
  auto v1 = s1.model->projector->named_parameters(), v2 = s2.model->projector->named_parameters();
  for (const auto& p : v1) moved |= !torch::equal(p.value(), v2[p.key()]);
  EXPECT_TRUE(moved) << "stage 2 must train the projector";
}

TEST_F(Trainer, StopRequestEndsWithACheckpoint) {
  options_.steps = 100000;
  // What SIGINT does in the CLI: ask the loop to stop; it finishes the step and saves.
  std::thread stopper([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    request_stop();
  });
  auto result = run_training(options_, (dir_ / "stopped").string(), false);
  stopper.join();
  EXPECT_TRUE(result.interrupted);
  EXPECT_LT(result.step, 100000);
  EXPECT_EQ(models::read_checkpoint_meta((dir_ / "stopped" / "checkpoint.pt").string())["step"], result.step);
  EXPECT_TRUE(fs::exists(dir_ / "stopped" / "checkpoint.pt"));
}

TEST_F(Trainer, CorruptCheckpointIsRefusedOnResume) {
  options_.steps = 2;
  run_training(options_, (dir_ / "c").string(), false);
  auto path = dir_ / "c" / "checkpoint.pt";
  fs::resize_file(path, fs::file_size(path) / 2);
  EXPECT_THROW(run_training(options_, (dir_ / "c").string(), true), FormatError);
}

}  // namespace segicl::train
