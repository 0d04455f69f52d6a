// The training loop for both SegICL stages (§4.2): stage 1 fits condition encoder + mask
// autoencoder + latent denoiser on masks; stage 2 freezes them and fits vision encoder +
// transformer + projector on in-context episodes (Eq. 5). Readable top to bottom in trainer.cpp.
// Data-parallel over several processes through distributed.h (c10d); not a scheduler of many runs.
#pragma once

#include <cstdint>
#include <string>

#include "segicl/core/config.h"
#include "segicl/data/episodes.h"
#include "segicl/train/distributed.h"

namespace segicl::train {

struct TrainOptions {
  int stage = 1;                    // 1 or 2
  std::string preset = "cpu";       // model preset name or JSON path (ignored on --resume/--init)
  std::string init_checkpoint;      // stage 2: the stage-1 checkpoint to start from
  std::string pack;                 // training pack (segicl pack --purpose train)
  std::string val_pack;             // optional validation pack (--purpose val)
  int64_t steps = 1000;             // total optimizer steps
  int64_t batch_size = 8;           // episodes per step and process (a job of N processes trains
                                    // on N * batch_size episodes per step)
  double learning_rate = 3e-4;      // AdamW peak learning rate
  double weight_decay = 0.01;
  int64_t warmup_steps = 100;       // linear warm-up, then cosine decay to 10% of the peak
  double grad_clip = 1.0;           // global gradient-norm clip (0 = off)
  int64_t log_every = 10;           // progress line + CSV row every N steps
  int64_t checkpoint_every = 200;   // atomic checkpoint every N steps (and at the end, and on SIGINT)
  int64_t val_every = 500;          // validation Dice every N steps (stage 2, with a val pack)
  int64_t val_episodes = 32;        // fixed validation episodes (k = 3)
  int64_t lora_rank = 0;            // stage 2: LoRA adapters of this rank on the transformer (0 = off)
  uint64_t seed = 0;                // run seed; every consumer derives its own from it
  std::string device = "auto";      // auto | cpu | cuda
  bool bf16 = true;                 // bf16 autocast on CUDA (never on CPU: ~30x slower there)
  std::string sample_on = "auto";   // where episodes are augmented: auto (the training device),
                                    // host (the CPU, as before session 13) or device
  int64_t max_seconds = 0;          // stop (with a checkpoint) after this wall time; 0 = no limit
  int64_t stop_at = 0;              // stop (with a checkpoint) at this step; the learning-rate
                                    // schedule still spans `steps` (0 = run to `steps`)
  data::EpisodeOptions episodes;    // k range, synthetic share, augmentation
  // How the ranks of a distributed job get their episodes (no effect on one process):
  //  "global": every rank draws the step's whole global batch from the run's one sampler stream and
  //            trains on its shard. N x B equals 1 x N*B; resume is exact at any world size.
  //            Costs N times the sampling work per rank (it runs on the prefetch thread).
  //  "rank":   each rank draws only its own B episodes from a stream derived from (seed, rank);
  //            rank 0's is the run's own. Sampling cost stays flat in N; resume is exact only at
  //            the same world size (a rank new to the run derives a stream from the step).
  std::string episode_sharding = "global";

  config::Json to_json() const;
  static TrainOptions from_json(const config::Json& j, const std::string& origin);
};

struct TrainResult {
  int64_t step = 0;          // last completed step
  double last_loss = 0;      // mean loss of the last logging window
  double steps_per_second = 0;
  bool interrupted = false;  // SIGINT/SIGTERM: a checkpoint was written, exit code 130
  int rank = 0;              // this process's rank in a distributed job (0 when alone)
  int world_size = 1;
};

// Runs (or, with resume, continues) a training run in `run_dir`: config.resolved.json,
// log.csv, metrics.jsonl, checkpoint.pt (latest, with optimizer/sampler/RNG state) and
// best.pt (stage 2, best validation Dice). Resume restores weights, optimizer, step and RNG
// exactly. Throws UsageError (bad options, run_dir not empty without resume), IoError, FormatError.
//
// Distributed (distributed.env.active()): every rank of the job calls this with the same options
// and run_dir (on a shared file system when resuming on several hosts). Each step draws one global
// batch of world_size * batch_size episodes from the run's sampler on every rank; rank r trains on
// episodes [r * batch_size, (r + 1) * batch_size) of it and the gradients are averaged, so N
// processes x batch B follow 1 process x batch N * B within float tolerance. Only rank 0 logs,
// validates and writes files. Resume accepts any world size that divides the checkpoint's global
// batch (the per-process batch is recomputed): the episodes stay exactly the same; results are
// bitwise identical only at the same world size and thread count (see docs/distributed.md).
// A failed or hung peer throws Error after at most distributed.timeout.
TrainResult run_training(const TrainOptions& options, const std::string& run_dir, bool resume,
                         const DistributedOptions& distributed = {});

// Asks a running training loop to stop at the end of the current step (signal-safe).
void request_stop();

}  // namespace segicl::train
