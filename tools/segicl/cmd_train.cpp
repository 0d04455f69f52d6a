// `segicl train`: run or resume stage 1 / stage 2 training into a run folder, in one process,
// as N local processes (--nproc), or as one rank of a job started by torchrun/srun (RANK set).
#include <csignal>
#include <cstdio>
#include <thread>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/train/distributed.h"
#include "segicl/train/trainer.h"

namespace segicl::cli {
namespace {

void on_signal(int) { train::request_stop(); }

}  // namespace

void register_train(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "train",
      "Train stage 1 (masks: condition encoder + decoder) or stage 2 (in-context encoder)\n"
      "  e.g. segicl train --stage 1 --preset cpu --pack runs/train128.pack --out runs/s1\n"
      "       segicl train --stage 2 --init runs/s1/checkpoint.pt --pack runs/train128.pack "
      "--val-pack runs/val128.pack --out runs/s2\n"
      "       segicl --threads 1 train --nproc 2 --preset tiny --pack runs/train128.pack "
      "--out runs/ddp   (2 processes, batch 8 each)");
  static train::TrainOptions o;
  static std::string out;
  static bool resume = false;
  static int nproc = 1;
  static int dist_timeout = 300;
  cmd->add_option("--stage", o.stage, "1 or 2")->capture_default_str();
  cmd->add_option("--preset", o.preset,
                  "Model preset (configs/model/NAME.json) or JSON path; stage 1")
      ->capture_default_str();
  cmd->add_option("--init", o.init_checkpoint, "Weights to start from (stage 2: the stage-1 checkpoint; stage 1: e.g. the shipped model to fine-tune)");
  cmd->add_option("--pack", o.pack, "Training pack (segicl pack --purpose train)")->required();
  cmd->add_option("--val-pack", o.val_pack, "Validation pack (segicl pack --purpose val)");
  cmd->add_option("-o,--out", out, "Run folder")->required();
  cmd->add_option("--steps", o.steps, "Total optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Episodes per step")->capture_default_str();
  cmd->add_option("--lr", o.learning_rate, "Peak AdamW learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--warmup", o.warmup_steps, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--grad-clip", o.grad_clip, "Gradient-norm clip (0 = off)")
      ->capture_default_str();
  cmd->add_option("--log-every", o.log_every, "Progress line every N steps")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N steps")
      ->capture_default_str();
  cmd->add_option("--val-every", o.val_every, "Validation Dice every N steps")
      ->capture_default_str();
  cmd->add_option("--val-episodes", o.val_episodes, "Validation episodes")->capture_default_str();
  cmd->add_option("--min-context", o.episodes.min_context, "Stage 2: fewest examples per episode")
      ->capture_default_str();
  cmd->add_option("--max-context", o.episodes.max_context, "Stage 2: most examples per episode")
      ->capture_default_str();
  cmd->add_option("--synthetic", o.episodes.synthetic_fraction, "Share of synthetic tasks")
      ->capture_default_str();
  cmd->add_option("--empty-queries", o.episodes.empty_query_fraction,
                  "Share of real episodes whose query is a slice without the structure (target: an empty mask)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--text-dropout", o.episodes.text_dropout,
                  "Probability of no instruction when k > 0")
      ->capture_default_str();
  cmd->add_option("--lora-rank", o.lora_rank,
                  "Stage 2: LoRA rank on the transformer (0 = full fine-tuning)")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Run seed")->capture_default_str();
  cmd->add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--bf16", o.bf16, "bf16 autocast on CUDA")->capture_default_str();
  cmd->add_option("--sample-on", o.sample_on,
                  "Where episodes are gathered and augmented: auto (the training device), host (CPU) or device; "
                  "the random draws are the host's either way")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "host", "device"}));
  cmd->add_option("--max-seconds", o.max_seconds,
                  "Stop with a checkpoint after this many seconds (0 = no limit)")
      ->capture_default_str();
  cmd->add_option("--stop-at", o.stop_at,
                  "Stop with a checkpoint at this step; the schedule still spans --steps (0 = off)")
      ->capture_default_str();
  cmd->add_option("--nproc", nproc,
                  "Data-parallel processes on this host (c10d: Gloo on CPU, NCCL on CUDA); ignored "
                  "when RANK is "
                  "set (torchrun/srun start the ranks)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option(
         "--episode-sharding", o.episode_sharding,
         "Distributed: global (every rank draws the global batch, keeps its shard: N x B == 1 x "
         "N*B) "
         "or rank (each rank draws only its B from a rank-derived stream: cheaper sampling)")
      ->capture_default_str()
      ->check(CLI::IsMember({"global", "rank"}));
  cmd->add_option(
         "--dist-timeout", dist_timeout,
         "Seconds a process waits for the others (rendezvous, all-reduce) before the job fails")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  cmd->add_flag(
      "--resume", resume,
      "Continue the run in --out from its checkpoint.pt (exact: weights, optimizer, step, RNG)");
  cmd->callback([&global] {
    train::DistributedOptions distributed;
    distributed.timeout = std::chrono::seconds(dist_timeout);
    auto env = train::DistributedEnv::from_environment();
    if (!env && nproc > 1) {
      // The launcher only starts and watches the workers: no torch threads before they exist.
      log::init(global.quiet ? "warn" : global.log_level, global.log_file);
      if (!train::distributed_available())
        SEGICL_THROW(
            UsageError,
            "--nproc " + std::to_string(nproc) + " needs c10d, which this segicl was built without",
            "",
            "train with --nproc 1, or rebuild with libgloo-dev installed "
            "(SEGICL_WITH_DISTRIBUTED)");
      auto launched = train::launch_local_workers(train::own_command_line(), nproc);
      if (launched.exit_code == 130) throw Interrupted();
      // The failed worker printed its own error above; this keeps its exit code's category.
      const std::string hint = "see the first worker's error above";
      if (launched.exit_code == 2) SEGICL_THROW(UsageError, launched.message, "", hint);
      if (launched.exit_code == 3) SEGICL_THROW(IoError, launched.message, "", hint);
      if (launched.exit_code != 0) SEGICL_THROW(Error, launched.message, "", hint);
      return;
    }
    GlobalOptions process = global;
    if (env) {
      distributed.env = *env;
      // Workers on one host share its cores unless --threads says otherwise.
      if (process.threads == 0)
        process.threads = std::max(
            1, static_cast<int>(std::thread::hardware_concurrency()) / env->local_world_size);
      // Only rank 0 logs progress and owns --log-file; the others report warnings and errors.
      if (env->rank != 0) {
        if (process.log_level != "debug" && process.log_level != "trace")
          process.log_level = "warn";
        process.log_file.clear();
      }
    }
    start(process);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    auto result = train::run_training(o, out, resume, distributed);
    if (result.rank == 0)
      std::printf("stage %d: step %lld, loss %.5f, %.2f steps/s%s%s\n", o.stage,
                  static_cast<long long>(result.step), result.last_loss, result.steps_per_second,
                  result.world_size > 1
                      ? (" x " + std::to_string(result.world_size) + " processes").c_str()
                      : "",
                  result.interrupted ? " (interrupted)" : "");
    if (result.interrupted) throw Interrupted();
  });
}

}  // namespace segicl::cli
