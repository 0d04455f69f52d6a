// The SegICL training loop (both stages), top to bottom: set-up or resume, then step, log,
// validate, checkpoint. See trainer.h for the contract.
#include "segicl/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/seed.h"
#include "segicl/models/checkpoint.h"

#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define SEGICL_AUTOCAST_V2 1
#endif

namespace segicl::train {
namespace fs = std::filesystem;
using config::Json;

namespace {

std::atomic<bool> g_stop{false};

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      SEGICL_THROW(UsageError, "--device cuda but no CUDA device is available", "", "use --device cpu or auto");
    return torch::kCUDA;
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  SEGICL_THROW(UsageError, "unknown device '" + name + "'", "", "use auto, cpu or cuda");
}

// bf16 autocast for CUDA only (TOOLCHAIN.md: bf16 on this CPU is ~30x slower than fp32).
struct AutocastScope {
  bool active;
  explicit AutocastScope(bool enable) : active(enable) {
    if (!active) return;
#ifdef SEGICL_AUTOCAST_V2
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~AutocastScope() {
    if (!active) return;
#ifdef SEGICL_AUTOCAST_V2
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
};

double learning_rate_at(const TrainOptions& o, int64_t step) {
  double warm = std::min(1.0, static_cast<double>(step + 1) / std::max<int64_t>(1, o.warmup_steps));
  double progress = std::clamp(static_cast<double>(step) / std::max<int64_t>(1, o.steps), 0.0, 1.0);
  return o.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
}

double dice_of(const torch::Tensor& probability, const torch::Tensor& truth) {
  auto p = (probability > 0.5).to(torch::kFloat32).flatten(), t = (truth > 0.5).to(torch::kFloat32).flatten();
  double denominator = (p.sum() + t.sum()).item<double>();
  return denominator == 0 ? 1.0 : 2.0 * (p * t).sum().item<double>() / denominator;
}

Json episode_json(const data::EpisodeOptions& e) {
  return {{"resolution", e.resolution}, {"min_context", e.min_context}, {"max_context", e.max_context},
          {"synthetic_fraction", e.synthetic_fraction}, {"empty_query_fraction", e.empty_query_fraction},
          {"text_dropout", e.text_dropout}, {"augment", e.augment}};
}

// Fixed validation episodes (k = 3, no augmentation), drawn once so numbers are comparable.
data::EpisodeBatch validation_batch(const std::string& val_pack, const TrainOptions& o, int64_t resolution) {
  data::EpisodeOptions e;
  e.resolution = static_cast<int>(resolution);
  e.min_context = e.max_context = 3;
  e.synthetic_fraction = 0;
  e.empty_query_fraction = 0;
  e.text_dropout = 0;
  e.augment = false;
  data::EpisodeSampler sampler(data::Pack::open(val_pack), e, derive_seed(o.seed, "validation"));
  return sampler.sample(static_cast<int>(o.val_episodes));
}

// Mean Dice over the validation episodes. Stage 1: reconstruction through condition tokens ->
// diffusion -> decode. Stage 2: the full in-context path (and the atlas floor for reference).
std::pair<double, double> validate(models::SegICLModelImpl& model, const data::EpisodeBatch& batch, int stage,
                                   const torch::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  double dice = 0, atlas = 0;
  const int64_t n = batch.batch_size();
  models::SegmentOptions so;
  so.ddim_steps = 4;
  so.seed = 1;
  for (int64_t e = 0; e < n; ++e) {
    auto query = batch.query_images.slice(0, e, e + 1).to(device);
    auto truth = batch.query_masks.slice(0, e, e + 1);
    torch::Tensor probability;
    if (stage == 1 && !model.config().is_crossconv()) {
      auto tokens = model.condition_encoder->forward(truth.to(device));
      auto context = model.encode_context({}, {}, batch.instructions[e]);
      probability = model.decode_condition(tokens, context.keyword, query, so).probability;
    } else {
      auto valid = batch.context_valid[e];
      auto images = batch.context_images[e].index({valid}).to(device);
      auto masks = batch.context_masks[e].index({valid}).to(device);
      auto context = model.encode_context(images, masks, batch.instructions[e]);
      probability = model.segment(context, query, so).probability;
      atlas += dice_of(masks.mean(0, true).cpu(), truth);
    }
    dice += dice_of(probability.cpu(), truth);
  }
  model.train();
  return {dice / n, atlas / n};
}

// Samples episodes on a background thread so a GPU step never waits for augmentation. Keeps the
// sampler state from before each queued batch: a checkpoint stores the state of the first batch
// not yet trained on, which makes resume exact whatever the queue depth.
class BatchPrefetcher {
 public:
  BatchPrefetcher(data::EpisodeSampler& sampler, int batch_size, size_t depth)
      : sampler_(sampler), batch_size_(batch_size), depth_(depth), worker_([this] { run(); }) {}
  ~BatchPrefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    worker_.join();
  }
  data::EpisodeBatch next() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty()) std::rethrow_exception(error_);
    auto batch = std::move(queue_.front().second);
    queue_.pop_front();
    changed_.notify_all();
    return batch;
  }
  // The sampler state from which the next batch handed out by next() was drawn.
  std::string state_of_next() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty()) std::rethrow_exception(error_);
    return queue_.front().first;
  }

 private:
  void run() {
    try {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(mutex_);
          changed_.wait(lock, [&] { return stopping_ || queue_.size() < depth_; });
          if (stopping_) return;
        }
        std::string state = sampler_.state();
        auto batch = sampler_.sample(batch_size_);
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.emplace_back(std::move(state), std::move(batch));
        changed_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
    }
  }
  data::EpisodeSampler& sampler_;
  int batch_size_;
  size_t depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<std::string, data::EpisodeBatch>> queue_;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

// Rank `rank`'s share of a global batch: episodes [rank * per_rank, (rank + 1) * per_rank).
data::EpisodeBatch shard_of(const data::EpisodeBatch& global, int rank, int64_t per_rank) {
  const int64_t begin = rank * per_rank;
  auto part = [&](const torch::Tensor& t) {
    return t.defined() ? t.narrow(0, begin, per_rank).contiguous() : t;
  };
  auto strings = [&](const std::vector<std::string>& all) {
    if (all.empty()) return all;
    return std::vector<std::string>(all.begin() + begin, all.begin() + begin + per_rank);
  };
  data::EpisodeBatch out;
  out.query_images = part(global.query_images);
  out.query_masks = part(global.query_masks);
  out.context_images = part(global.context_images);
  out.context_masks = part(global.context_masks);
  out.context_valid = part(global.context_valid);
  out.instructions = strings(global.instructions);
  out.task_names = strings(global.task_names);
  return out;
}

// The torch RNG stream of rank r > 0 (model-internal noise: diffusion timesteps, dropout). Rank 0
// keeps the run's own stream, so a one-process run is unchanged by this layer.
uint64_t rank_torch_seed(uint64_t seed, int rank, int64_t step) {
  return derive_seed(seed, "torch/rank" + std::to_string(rank) + "/step" + std::to_string(step));
}

// The step a log line records, or -1 when the line is not a whole record of one: the CSV header,
// a half-written last line, a JSON line that does not parse.
int64_t step_of_csv_line(const std::string& line) {
  const auto comma = line.find(',');
  if (comma == std::string::npos || std::count(line.begin(), line.end(), ',') != 5) return -1;
  int64_t step = -1;
  auto [end, error] = std::from_chars(line.data(), line.data() + comma, step);
  return error == std::errc() && end == line.data() + comma ? step : -1;
}

int64_t step_of_json_line(const std::string& line) {
  const Json record = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  return record.is_object() && record.contains("step") && record["step"].is_number_integer()
             ? record["step"].get<int64_t>()
             : -1;
}

// A run killed after its last checkpoint leaves log rows of steps that `--resume` trains again,
// and possibly a half-written last line (the logs are appended, not published atomically). On
// resume only the whole records up to the checkpoint's step are kept, so that the logs read as one
// run: each step once, every line whole. The trimmed file replaces the old one atomically.
// `header` is the CSV header line to write first, empty for a log without one (JSON lines).
void trim_log_to_step(const fs::path& path, int64_t step, const std::string& header,
                      int64_t (*step_of_line)(const std::string&)) {
  if (!fs::exists(path)) {
    if (!header.empty()) write_file_atomic(path.string(), header + "\n");
    return;
  }
  const std::string text = read_file(path.string());
  std::string kept = header.empty() ? "" : header + "\n";
  size_t begin = 0;
  for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
    const std::string line = text.substr(begin, end - begin);  // a line without '\n' is never kept
    const int64_t line_step = step_of_line(line);
    if (line_step >= 0 && line_step <= step) kept += line + "\n";
  }
  if (kept != text) write_file_atomic(path.string(), kept);
}

}  // namespace

void request_stop() { g_stop.store(true); }

Json TrainOptions::to_json() const {
  return {{"stage", stage}, {"preset", preset}, {"init_checkpoint", init_checkpoint}, {"pack", pack},
          {"val_pack", val_pack}, {"steps", steps}, {"batch_size", batch_size}, {"learning_rate", learning_rate},
          {"weight_decay", weight_decay}, {"warmup_steps", warmup_steps}, {"grad_clip", grad_clip},
          {"log_every", log_every}, {"checkpoint_every", checkpoint_every}, {"val_every", val_every},
          {"val_episodes", val_episodes}, {"lora_rank", lora_rank}, {"seed", seed}, {"device", device},
          {"bf16", bf16}, {"sample_on", sample_on}, {"max_seconds", max_seconds}, {"stop_at", stop_at}, {"episodes", episode_json(episodes)},
          {"episode_sharding", episode_sharding}};
}

TrainOptions TrainOptions::from_json(const Json& j, const std::string& origin) {
  TrainOptions o;
  Json merged = o.to_json();
  config::merge_strict(merged, j, origin);
  o.stage = merged["stage"];
  o.preset = merged["preset"];
  o.init_checkpoint = merged["init_checkpoint"];
  o.pack = merged["pack"];
  o.val_pack = merged["val_pack"];
  o.steps = merged["steps"];
  o.batch_size = merged["batch_size"];
  o.learning_rate = merged["learning_rate"];
  o.weight_decay = merged["weight_decay"];
  o.warmup_steps = merged["warmup_steps"];
  o.grad_clip = merged["grad_clip"];
  o.log_every = merged["log_every"];
  o.checkpoint_every = merged["checkpoint_every"];
  o.val_every = merged["val_every"];
  o.val_episodes = merged["val_episodes"];
  o.lora_rank = merged["lora_rank"];
  o.seed = merged["seed"];
  o.device = merged["device"];
  o.bf16 = merged["bf16"];
  o.sample_on = merged["sample_on"];
  o.max_seconds = merged["max_seconds"];
  o.stop_at = merged["stop_at"];
  o.episode_sharding = merged["episode_sharding"];
  const Json& e = merged["episodes"];
  o.episodes.resolution = e["resolution"];
  o.episodes.min_context = e["min_context"];
  o.episodes.max_context = e["max_context"];
  o.episodes.synthetic_fraction = e["synthetic_fraction"];
  o.episodes.empty_query_fraction = e["empty_query_fraction"];
  o.episodes.text_dropout = e["text_dropout"];
  o.episodes.augment = e["augment"];
  return o;
}

TrainResult run_training(const TrainOptions& requested, const std::string& run_dir, bool resume,
                         const DistributedOptions& distributed) {
  auto logger = log::get("train");
  g_stop.store(false);
  const fs::path dir(run_dir);
  const std::string checkpoint_path = (dir / "checkpoint.pt").string();
  if (!resume && fs::exists(checkpoint_path))
    SEGICL_THROW(UsageError, "run folder already holds a checkpoint", run_dir,
                 "pass --resume to continue it, or choose a new --out");
  fs::create_directories(dir);

  // ---- options: a resumed run keeps its own, except how long and where it runs ------------------
  TrainOptions o = requested;
  if (resume) {
    if (!fs::exists(checkpoint_path))
      SEGICL_THROW(UsageError, "nothing to resume: no checkpoint.pt", run_dir, "start without --resume");
    auto meta = models::read_checkpoint_meta(checkpoint_path);
    o = TrainOptions::from_json(meta.at("train"), checkpoint_path);
    o.steps = requested.steps;
    o.max_seconds = requested.max_seconds;
    o.stop_at = requested.stop_at;
    o.device = requested.device;
    o.sample_on = requested.sample_on;  // like the device: where it runs, not what it computes
  }
  if (o.stage != 1 && o.stage != 2) SEGICL_THROW(UsageError, "--stage must be 1 or 2", "", "");
  if (o.sample_on != "auto" && o.sample_on != "host" && o.sample_on != "device")
    SEGICL_THROW(UsageError, "unknown --sample-on '" + o.sample_on + "'", "", "use auto, host or device");
  if (o.pack.empty()) SEGICL_THROW(UsageError, "a training pack is required", "", "make one with `segicl pack`");
  torch::Device device = resolve_device(o.device);
  // ---- distributed job: join it before anything is read, so a bad rank fails the rendezvous -----
  std::unique_ptr<Communicator> comm;
  const int rank = distributed.env.rank, world = distributed.env.active() ? distributed.env.world_size : 1;
  const bool root = rank == 0;
  if (distributed.env.active()) {
    if (device.is_cuda())
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                               distributed.env.local_rank % torch::cuda::device_count()));
    comm = std::make_unique<Communicator>(distributed, device);
    if (root) logger->info("distributed: {} processes over {} ({}:{})", world, comm->backend(),
                           distributed.env.master_addr, distributed.env.master_port);
  }
  const bool autocast = o.bf16 && device.is_cuda();
  torch::manual_seed(derive_seed(o.seed, "init"));

  // ---- model ------------------------------------------------------------------------------
  models::SegICLModel model{nullptr};
  Json init_meta;
  if (resume) {
    model = models::load_checkpoint(checkpoint_path, device).model;
  } else if (o.stage == 2 || !o.init_checkpoint.empty()) {
    // Stage 2 starts from stage 1; a stage-1 run may also continue from any checkpoint's weights
    // (e.g. fine-tuning the shipped crossconv model on a GPU with a fresh optimizer and schedule).
    if (o.init_checkpoint.empty())
      SEGICL_THROW(UsageError, "stage 2 starts from a stage-1 checkpoint", "", "pass --init runs/<stage1>/checkpoint.pt");
    auto loaded = models::load_checkpoint(o.init_checkpoint, device);
    model = loaded.model;
    init_meta = loaded.meta;
  } else {
    model = models::SegICLModel(models::load_preset(o.preset));
    model->to(device);
  }
  if (o.stage == 2 && o.lora_rank > 0) model->enable_lora(o.lora_rank, model->config().lora_alpha);
  model->set_stage(o.stage);
  model->train();
  if (comm) {
    // Every rank built or loaded the same weights already; the broadcast makes it a guarantee.
    std::vector<torch::Tensor> state = model->parameters();
    for (auto& buffer : model->buffers()) state.push_back(buffer);
    comm->broadcast(state);
    if (!root) torch::manual_seed(rank_torch_seed(o.seed, rank, 0));
  }
  std::vector<torch::Tensor> parameters;
  for (auto& p : model->parameters_for_stage(o.stage))
    if (p.requires_grad()) parameters.push_back(p);
  int64_t trainable = 0;
  for (auto& p : parameters) trainable += p.numel();
  if (root)
    logger->info("stage {} on {}: {} trainable parameters, batch {}{}, {} steps", o.stage, device.str(), trainable,
                 o.batch_size, world > 1 ? " x " + std::to_string(world) + " processes" : "", o.steps);

  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay));

  // ---- data -------------------------------------------------------------------------------
  auto pack = data::Pack::open(o.pack);
  if (pack->channels() != model->config().in_channels)
    SEGICL_THROW(UsageError, "pack has " + std::to_string(pack->channels()) + " channels, the model expects " +
                                 std::to_string(model->config().in_channels),
                 o.pack, "re-pack with the model's channel setting");
  o.episodes.resolution = static_cast<int>(model->config().resolution);
  const bool crossconv = model->config().is_crossconv();
  if (o.stage == 1 && !crossconv) o.episodes.min_context = o.episodes.max_context = 0;  // masks only
  // Without text conditioning the UniverSeg architecture has nothing to go on at K = 0.
  if (model->config().needs_examples()) o.episodes.min_context = std::max(1, o.episodes.min_context);
  o.episodes.max_context = std::min<int>(o.episodes.max_context, static_cast<int>(model->config().max_context()));
  if (o.episode_sharding != "global" && o.episode_sharding != "rank")
    SEGICL_THROW(UsageError, "unknown episode sharding '" + o.episode_sharding + "'", "", "use global or rank");
  const bool rank_streams = comm && o.episode_sharding == "rank";
  auto rank_sampler_seed = [&](int64_t step) {
    return derive_seed(o.seed, "episodes/rank" + std::to_string(rank) + (step > 0 ? "/step" + std::to_string(step) : ""));
  };
  data::EpisodeSampler sampler(pack, o.episodes,
                               rank_streams && !root ? rank_sampler_seed(0) : derive_seed(o.seed, "episodes"));
  const torch::Device sample_device = o.sample_on == "host" ? torch::Device(torch::kCPU) : device;

  int64_t start_step = 0;
  double best_val = -1;
  if (resume) {
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint_path);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    c10::IValue state;
    archive.read("trainer", state);
    Json trainer = Json::parse(state.toStringRef());
    start_step = trainer.at("step");
    best_val = trainer.value("best_val", -1.0);
    if (!rank_streams) {
      sampler.restore(trainer.at("sampler"));
    } else {
      // Per-rank streams: rank r continues its own when the checkpoint has it.
      const Json samplers = trainer.value("samplers", Json::array({trainer.at("sampler")}));
      if (rank < static_cast<int>(samplers.size()))
        sampler.restore(samplers[rank].get<std::string>());
      else
        sampler = data::EpisodeSampler(pack, o.episodes, rank_sampler_seed(trainer.at("step").get<int64_t>()));
    }
    // Keep the checkpoint's global batch at any world size, so the episodes stay the same.
    const int64_t global_batch = trainer.value("global_batch", o.batch_size);
    if (global_batch % world != 0)
      SEGICL_THROW(UsageError,
                   "the checkpoint's global batch of " + std::to_string(global_batch) +
                       " episodes does not split over " + std::to_string(world) + " processes",
                   checkpoint_path, "resume with a number of processes that divides " + std::to_string(global_batch));
    o.batch_size = global_batch / world;
    // Rank r's torch RNG comes back when the checkpoint has it (same or larger world size before);
    // a rank new to the run starts a stream derived from its rank and the step.
    torch::Tensor rng;
    const std::string rng_key = root ? "rng_cpu" : "rng_cpu_rank" + std::to_string(rank);
    if (root || archive.try_read(rng_key, rng)) {
      if (root) archive.read(rng_key, rng);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
    } else {
      torch::manual_seed(rank_torch_seed(o.seed, rank, start_step));
    }
    if (root)
      logger->info("resumed {} at step {} (global batch {}, {} per process)", checkpoint_path, start_step,
                   global_batch, o.batch_size);
  }
  sampler.compute_on(sample_device);  // after any re-construction above: the device copy goes with it
  if (root)
    write_file_atomic((dir / "config.resolved.json").string(),
                      Json{{"train", o.to_json()}, {"model", model->config().to_json()}}.dump(2));

  data::EpisodeBatch val_batch;
  const bool has_val = !o.val_pack.empty();
  if (has_val) val_batch = validation_batch(o.val_pack, o, model->config().resolution);

  std::unique_ptr<BatchPrefetcher> prefetcher;
  // Only rank 0 writes. In a distributed job every rank calls this at the same steps with
  // with_state: the ranks' torch RNG states and parameter digests are gathered here, and equal
  // digests are checked (a mismatch means the ranks diverged, which must never happen).
  auto save = [&](const std::string& path, int64_t step, bool with_state) {
    std::vector<torch::Tensor> rank_rngs;
    std::vector<std::string> samplers;
    Json distributed_meta;
    if (comm && with_state) {
      if (rank_streams) samplers = comm->gather_to_root("sampler", prefetcher->state_of_next());
      auto own_rng = at::detail::getDefaultCPUGenerator().get_state();
      auto rngs = comm->gather_to_root("rng", std::string(static_cast<const char*>(own_rng.data_ptr()), own_rng.numel()));
      auto digests = comm->gather_to_root("digest", std::to_string(parameter_digest(model->parameters())));
      if (!root) return;
      for (const auto& bytes : rngs)
        rank_rngs.push_back(torch::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())},
                                             torch::kUInt8).clone());
      distributed_meta = {{"world_size", world}, {"backend", comm->backend()}, {"parameter_digests", digests}};
      for (const auto& digest : digests)
        if (digest != digests.front())
          SEGICL_THROW(Error, "parameters differ between ranks at step " + std::to_string(step), path,
                       "this is a bug in segicl's distributed training: please report it with the log");
    }
    if (!root) return;
    Json meta{{"stage", o.stage}, {"step", step}, {"seed", o.seed}, {"train", o.to_json()},
              {"pack_header", Json::parse(pack->header_json()).value("tasks", Json::array())},
              {"best_val_dice", best_val}};
    if (!init_meta.is_null()) meta["init_from"] = {{"path", o.init_checkpoint}, {"step", init_meta.value("step", 0)}};
    if (!distributed_meta.is_null()) meta["distributed"] = distributed_meta;
    models::SaveOptions so;
    if (with_state) {
      so.extra = [&](torch::serialize::OutputArchive& archive) {
        torch::serialize::OutputArchive optimizer_archive;
        optimizer.save(optimizer_archive);
        archive.write("optimizer", optimizer_archive);
        archive.write("trainer", c10::IValue(Json{{"step", step},
                                                  {"best_val", best_val},
                                                  {"sampler", prefetcher->state_of_next()},
                                                  {"samplers", samplers},
                                                  {"world_size", world},
                                                  {"global_batch", o.batch_size * world}}
                                                 .dump()));
        archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
        for (size_t r = 1; r < rank_rngs.size(); ++r) archive.write("rng_cpu_rank" + std::to_string(r), rank_rngs[r]);
      };
    }
    models::save_checkpoint(path, *model, meta, so);
  };

  // ---- the loop ---------------------------------------------------------------------------
  // Every rank draws the whole global batch from the same sampler stream and keeps its shard: the
  // sampler state is then one for the job, which is what makes resume exact at any world size.
  prefetcher = std::make_unique<BatchPrefetcher>(sampler, static_cast<int>(o.batch_size * (rank_streams ? 1 : world)),
                                                 device.is_cuda() ? 4 : 1);
  std::ofstream csv, metrics;
  if (root) {
    const std::string csv_header = "step,loss,learning_rate,steps_per_second,elapsed_seconds,val_dice";
    if (resume) {
      trim_log_to_step(dir / "log.csv", start_step, csv_header, step_of_csv_line);
      trim_log_to_step(dir / "metrics.jsonl", start_step, "", step_of_json_line);
    }
    // A fresh start in a folder without a checkpoint (a run killed before its first one) starts
    // its logs afresh too.
    const auto mode = resume ? std::ios::app : std::ios::trunc;
    csv.open((dir / "log.csv").string(), mode);
    metrics.open((dir / "metrics.jsonl").string(), mode);
    if (!resume) csv << csv_header << "\n";
  }
  const auto started = std::chrono::steady_clock::now();
  auto window_start = started;
  double window_loss = 0, window_wait = 0;  // window_wait: seconds the loop waited for episodes
  int64_t window_steps = 0, step = start_step;
  TrainResult result;
  for (; step < o.steps; ++step) {
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::vector<bool> stop{g_stop.load(), o.max_seconds > 0 && elapsed > o.max_seconds};
    if (comm) stop = comm->any(stop);  // all ranks stop at the same step, or the others would hang
    if (stop[0] || stop[1] || (o.stop_at > 0 && step >= o.stop_at)) {
      result.interrupted = stop[0];
      break;
    }
    const double lr = learning_rate_at(o, step);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    const auto wait_start = std::chrono::steady_clock::now();
    auto batch = (comm && !rank_streams ? shard_of(prefetcher->next(), rank, o.batch_size) : prefetcher->next())
                     .to(device);
    window_wait += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      AutocastScope scope(autocast);
      loss = crossconv      ? model->crossconv_loss(batch)
             : o.stage == 1 ? model->stage1_loss(batch.query_masks, batch.query_images, batch.instructions).total
                          : model->stage2_loss(batch);
    }
    double loss_value = loss.item<double>();
    auto check_finite = [&] {
      if (!std::isfinite(loss_value))
        SEGICL_THROW(Error, "loss became " + std::to_string(loss_value) + " at step " + std::to_string(step), run_dir,
                     "lower the learning rate or resume from the last checkpoint");
    };
    if (!comm) check_finite();
    loss.backward();
    if (comm) {
      loss_value = comm->average_gradients(parameters, loss_value);
      check_finite();  // on the mean, so that every rank throws or none does
    }
    if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters, o.grad_clip);
    optimizer.step();
    window_loss += loss_value;
    ++window_steps;

    const int64_t done = step + 1;
    double val_dice = -1;
    if (root && has_val && o.val_every > 0 && done % o.val_every == 0) {
      auto [dice, atlas] = validate(*model, val_batch, o.stage, device);
      val_dice = dice;
      logger->info("step {}: validation Dice {:.4f} (atlas of the examples {:.4f})", done, dice, atlas);
      metrics << Json{{"step", done}, {"val_dice", dice}, {"val_atlas_dice", atlas}}.dump() << "\n";
      if (dice > best_val) {
        best_val = dice;
        save((dir / "best.pt").string(), done, false);
      }
    }
    if (done % o.log_every == 0 || done == o.steps) {
      auto now = std::chrono::steady_clock::now();
      double window = std::chrono::duration<double>(now - window_start).count();
      double rate = window_steps / std::max(window, 1e-9);
      double total = std::chrono::duration<double>(now - started).count();
      result.last_loss = window_loss / window_steps;
      result.steps_per_second = rate;
      // The share of the window spent waiting for episodes: near 0 means the model bounds the
      // run, near 1 the sampler (then --sample-on device or more cores help, a bigger GPU not).
      const double input_wait = window_wait / std::max(window, 1e-9);
      if (root) {
        logger->info("step {}/{} loss {:.4f} lr {:.2e} {:.2f} steps/s (waiting for episodes {:.0f} %) ETA {:.0f} s",
                     done, o.steps, result.last_loss, lr, rate, 100 * input_wait,
                     (o.steps - done) / std::max(rate, 1e-9));
        csv << done << "," << result.last_loss << "," << lr << "," << rate << "," << total << ","
            << (val_dice >= 0 ? std::to_string(val_dice) : "") << "\n";
        csv.flush();
        metrics << Json{{"step", done}, {"loss", result.last_loss}, {"lr", lr}, {"steps_per_second", rate},
                        {"input_wait", input_wait}}.dump() << "\n";
        metrics.flush();
      }
      window_loss = 0;
      window_wait = 0;
      window_steps = 0;
      window_start = now;
    }
    if (done % o.checkpoint_every == 0 && done < o.steps) save(checkpoint_path, done, true);
  }
  save(checkpoint_path, step, true);
  prefetcher.reset();
  result.step = step;
  result.rank = rank;
  result.world_size = world;
  if (root) logger->info("{} at step {}: {}", result.interrupted ? "interrupted" : "stopped", step, checkpoint_path);
  return result;
}

}  // namespace segicl::train
