// `segicl train`: run or resume stage 1 / stage 2 training into a run folder.
#include <csignal>
#include <cstdio>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/train/trainer.h"

namespace segicl::cli {
namespace {

void on_signal(int) { train::request_stop(); }

}  // namespace

void register_train(CLI::App& app, GlobalOptions& global) {
  auto* cmd = app.add_subcommand("train",
                                 "Train stage 1 (masks: condition encoder + decoder) or stage 2 (in-context encoder)\n"
                                 "  e.g. segicl train --stage 1 --preset cpu --pack runs/train128.pack --out runs/s1\n"
                                 "       segicl train --stage 2 --init runs/s1/checkpoint.pt --pack runs/train128.pack "
                                 "--val-pack runs/val128.pack --out runs/s2");
  static train::TrainOptions o;
  static std::string out;
  static bool resume = false;
  cmd->add_option("--stage", o.stage, "1 or 2")->capture_default_str();
  cmd->add_option("--preset", o.preset, "Model preset (configs/model/NAME.json) or JSON path; stage 1")->capture_default_str();
  cmd->add_option("--init", o.init_checkpoint, "Stage 2: the stage-1 checkpoint to start from");
  cmd->add_option("--pack", o.pack, "Training pack (segicl pack --purpose train)")->required();
  cmd->add_option("--val-pack", o.val_pack, "Validation pack (segicl pack --purpose val)");
  cmd->add_option("-o,--out", out, "Run folder")->required();
  cmd->add_option("--steps", o.steps, "Total optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Episodes per step")->capture_default_str();
  cmd->add_option("--lr", o.learning_rate, "Peak AdamW learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--warmup", o.warmup_steps, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--grad-clip", o.grad_clip, "Gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("--log-every", o.log_every, "Progress line every N steps")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N steps")->capture_default_str();
  cmd->add_option("--val-every", o.val_every, "Validation Dice every N steps")->capture_default_str();
  cmd->add_option("--val-episodes", o.val_episodes, "Validation episodes")->capture_default_str();
  cmd->add_option("--min-context", o.episodes.min_context, "Stage 2: fewest examples per episode")->capture_default_str();
  cmd->add_option("--max-context", o.episodes.max_context, "Stage 2: most examples per episode")->capture_default_str();
  cmd->add_option("--synthetic", o.episodes.synthetic_fraction, "Share of synthetic tasks")->capture_default_str();
  cmd->add_option("--text-dropout", o.episodes.text_dropout, "Probability of no instruction when k > 0")->capture_default_str();
  cmd->add_option("--lora-rank", o.lora_rank, "Stage 2: LoRA rank on the transformer (0 = full fine-tuning)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Run seed")->capture_default_str();
  cmd->add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--bf16", o.bf16, "bf16 autocast on CUDA")->capture_default_str();
  cmd->add_option("--max-seconds", o.max_seconds, "Stop with a checkpoint after this many seconds (0 = no limit)")->capture_default_str();
  cmd->add_option("--stop-at", o.stop_at, "Stop with a checkpoint at this step; the schedule still spans --steps (0 = off)")->capture_default_str();
  cmd->add_flag("--resume", resume, "Continue the run in --out from its checkpoint.pt (exact: weights, optimizer, step, RNG)");
  cmd->callback([&global] {
    start(global);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    auto result = train::run_training(o, out, resume);
    std::printf("stage %d: step %lld, loss %.5f, %.2f steps/s%s\n", o.stage, static_cast<long long>(result.step),
                result.last_loss, result.steps_per_second, result.interrupted ? " (interrupted)" : "");
    if (result.interrupted) throw Interrupted();
  });
}

}  // namespace segicl::cli
