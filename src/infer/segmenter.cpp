// Segmenter: preprocessing, context-example selection, batched diffusion decoding and mapping back
// to the query grid (see segmenter.h). The model math lives in segicl_models; this file only
// orchestrates and checks inputs.
#include "segicl/infer/segmenter.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <mutex>

#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/seed.h"
#include "segicl/data/examples.h"
#include "segicl/data/preprocess.h"
#include "segicl/infer/postprocess.h"
#include "segicl/models/checkpoint.h"

namespace segicl::infer {

struct Segmenter::State {
  std::string checkpoint;
  c10::Device device{c10::kCPU};
  std::shared_ptr<models::SegICLModelImpl> model;
  models::ModelConfig config;
  std::shared_ptr<const data::ExemplarMemory> memory;
};

namespace {

std::string size_string(const std::array<int64_t, 3>& size) {
  return std::to_string(size[0]) + "x" + std::to_string(size[1]) + "x" + std::to_string(size[2]);
}

std::string example_name(const Example& example, size_t index) {
  std::string out = "example " + std::to_string(index + 1);
  if (!example.name.empty()) out += " (" + example.name + ")";
  return out;
}

void check_options(const SegmentOptions& o) {
  auto bad = [](const std::string& what) { SEGICL_THROW(UsageError, what, "", "see `segicl segment --help`"); };
  if (o.ddim_steps < 1) bad("ddim_steps must be >= 1");
  if (o.num_samples < 1) bad("num_samples must be >= 1");
  if (o.batch_slices < 1) bad("batch_slices must be >= 1");
  if (o.slices_per_example < 1) bad("slices_per_example must be >= 1");
  if (!(o.threshold >= 0.0 && o.threshold <= 1.0)) bad("threshold must be in [0, 1]");
  check_postprocess_steps(o.postprocess);
  if (!data::is_memory_choice(o.memory_choice))
    bad("unknown memory choice '" + o.memory_choice + "' (" + data::memory_choices_hint() + ")");
}

void check_volume(const io::Volume& v, const std::string& what) {
  if (v.num_voxels() <= 0) SEGICL_THROW(DataError, what + " is empty (size " + size_string(v.size) + ")", "", "");
  if (static_cast<int64_t>(v.voxels.size()) != v.num_voxels() * v.channels)
    SEGICL_THROW(ShapeError,
                 what + ": " + std::to_string(v.voxels.size()) + " values for size " + size_string(v.size) + " x " +
                     std::to_string(v.channels) + " channels",
                 "", "");
}

int64_t count_label(const io::LabelMap& labels, int label) {
  int64_t n = 0;
  for (auto value : labels.labels) n += label < 0 ? value != 0 : value == label;
  return n;
}

// Distributes `cap` context slots over examples round-robin, one example at a time, so a cap keeps
// every example represented (spread across examples) before any gets a second slice.
std::vector<int> allot(const std::vector<int>& wanted, int64_t cap) {
  std::vector<int> out(wanted.size(), 0);
  int64_t used = 0;
  for (bool progress = true; progress && used < cap;) {
    progress = false;
    for (size_t i = 0; i < wanted.size() && used < cap; ++i)
      if (out[i] < wanted[i]) ++out[i], ++used, progress = true;
  }
  return out;
}

}  // namespace

c10::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
  try {
    c10::Device device(name);
    if (device.is_cuda() && !torch::cuda::is_available())
      SEGICL_THROW(UsageError, "device '" + name + "' asked for but CUDA is not available", "",
                   "use --device cpu or auto, or a CUDA build of segicl");
    if (!device.is_cuda() && !device.is_cpu())
      SEGICL_THROW(UsageError, "unsupported device '" + name + "'", "", "use auto, cpu, cuda or cuda:N");
    return device;
  } catch (const c10::Error&) {
    SEGICL_THROW(UsageError, "unknown device '" + name + "'", "", "use auto, cpu, cuda or cuda:N");
  }
}

Segmenter::Segmenter(const std::string& checkpoint, const c10::Device& device, const std::string& memory) {
  if (!std::filesystem::exists(checkpoint) && !std::filesystem::exists(checkpoint + ".00"))
    SEGICL_THROW(IoError, "model checkpoint not found", checkpoint,
                 "pass --model PATH or set SEGICL_MODEL (train one with `segicl train`)");
  auto state = std::make_shared<State>();
  state->checkpoint = checkpoint;
  state->device = device;
  auto loaded = models::load_checkpoint(checkpoint, device);
  loaded.model->eval();
  state->model = loaded.model.ptr();
  state->config = loaded.model->config();
  log::get("infer")->info("loaded {} on {}: R={}, in_channels={}, k<={}, stage {}, step {}", checkpoint,
                          device.str(), state->config.resolution, state->config.in_channels,
                          state->config.max_context(), loaded.meta.value("stage", 0),
                          loaded.meta.value("step", static_cast<int64_t>(0)));
  const std::string memory_path = data::resolve_memory_path(checkpoint, memory);
  if (!memory_path.empty()) {
    state->memory = data::ExemplarMemory::open(memory_path);
    state->memory->require_fit(state->config.resolution, state->config.in_channels);
    log::get("infer")->info("exemplar memory {}: {} slices, {} structures", memory_path,
                            state->memory->pack().num_slices(), state->memory->structures().size());
  }
  state_ = std::move(state);
}

Segmenter::~Segmenter() = default;
Segmenter::Segmenter(Segmenter&&) noexcept = default;
Segmenter& Segmenter::operator=(Segmenter&&) noexcept = default;

const models::ModelConfig& Segmenter::config() const { return state_->config; }
int64_t Segmenter::max_context() const { return state_->config.max_context(); }
const std::string& Segmenter::checkpoint() const { return state_->checkpoint; }
c10::Device Segmenter::device() const { return state_->device; }
const data::ExemplarMemory* Segmenter::memory() const { return state_->memory.get(); }

SegmentResult Segmenter::segment(const io::Volume& query, const std::vector<Example>& examples,
                                 const std::string& text, const SegmentOptions& options) const {
  const auto started = std::chrono::steady_clock::now();
  check_options(options);
  auto logger = log::get("infer");
  const auto& config = state_->config;
  const int resolution = static_cast<int>(config.resolution);
  data::PreprocessOptions prep;
  prep.resolution = resolution;
  prep.luminance = config.in_channels != 3;

  check_volume(query, "the query image");
  if (config.in_channels == 3 && query.channels != 3)
    SEGICL_THROW(DataError, "the model takes RGB images but the query has " + std::to_string(query.channels) +
                                " channel(s)", "", "use a model trained on single-channel images");

  // Guards are thread-local: set here, in the thread doing the work.
  torch::NoGradGuard no_grad;
  c10::InferenceMode inference_mode;
  try {
    // ---- context: 2D examples give their plane; 3D examples give spread slices --------------
    std::vector<data::PreparedVolume> prepared;
    std::vector<std::vector<int>> label_ids;
    std::vector<int> wanted;
    for (size_t i = 0; i < examples.size(); ++i) {
      const auto& ex = examples[i];
      const std::string name = example_name(ex, i);
      check_volume(ex.image, name + " image");
      if (ex.image.size != ex.labels.size || static_cast<int64_t>(ex.labels.labels.size()) != ex.labels.num_voxels())
        SEGICL_THROW(DataError,
                     name + ": image is " + size_string(ex.image.size) + " but its labels are " +
                         size_string(ex.labels.size),
                     ex.name, "the label map must be on the image's voxel grid");
      if (config.in_channels == 3 && ex.image.channels != 3)
        SEGICL_THROW(DataError, name + " is not RGB but the model takes 3 channels", ex.name, "");
      if (count_label(ex.labels, ex.label) == 0) {
        if (ex.label < 0)
          SEGICL_THROW(DataError, name + " has no foreground voxel (its mask is empty)", ex.name,
                       "give an example whose label map marks the structure, or drop it");
        SEGICL_THROW(DataError, name + " has no voxel of label " + std::to_string(ex.label), ex.name,
                     "check --example-label against the example's label map (or omit it to use any non-zero label)");
      }
      prepared.push_back(data::prepare(ex.image, &ex.labels, options.modality, prep));
      label_ids.push_back(ex.label < 0 ? std::vector<int>{} : std::vector<int>{ex.label});
      wanted.push_back(prepared.back().num_slices() == 1 ? 1 : options.slices_per_example);
    }
    const auto allotted = allot(wanted, config.max_context());
    std::vector<torch::Tensor> context_images, context_masks;
    for (size_t i = 0; i < prepared.size(); ++i) {
      if (allotted[i] == 0) {
        logger->warn("{} dropped: the model takes at most {} context pairs", example_name(examples[i], i),
                     config.max_context());
        continue;
      }
      auto slices = data::spread_example_slices(prepared[i], label_ids[i], allotted[i], 3);
      // A structure a few pixels wide on every slice still counts: fall back to any positive slice.
      if (slices.empty()) slices = data::spread_example_slices(prepared[i], label_ids[i], allotted[i], 1);
      for (int64_t s : slices) {
        context_images.push_back(data::image_plane(prepared[i], s, resolution));
        context_masks.push_back(data::binary_plane(prepared[i], s, label_ids[i], resolution));
      }
    }
    prepared.clear();
    auto volume = data::prepare(query, nullptr, options.modality, prep);
    torch::Tensor images, masks;
    std::vector<std::string> recalled_tasks;
    // Text without examples (or, with memory_top_up, fewer pairs than memory_examples): recalled
    // training-pool pairs of the named structure fill the context.
    const int64_t wanted_from_memory =
        std::min<int64_t>(options.memory_examples, config.max_context()) - static_cast<int64_t>(context_images.size());
    const bool recall = context_images.empty() || options.memory_top_up;
    if (!text.empty() && state_->memory && recall && wanted_from_memory > 0) {
      data::Recalled recalled;
      if (options.memory_choice == "similar") {
        // Every query plane as the model will see it (as `segicl eval` does, so its numbers hold).
        std::vector<torch::Tensor> planes;
        for (int64_t s = 0; s < volume.num_slices(); ++s) planes.push_back(data::image_plane(volume, s, resolution));
        recalled = state_->memory->recall_similar(text, static_cast<int>(wanted_from_memory), torch::stack(planes));
      } else {
        recalled = state_->memory->recall(text, static_cast<int>(wanted_from_memory), options.seed);
      }
      if (recalled.count() > 0) {
        for (int64_t i = 0; i < recalled.count(); ++i) {
          context_images.push_back(recalled.images[i]);
          context_masks.push_back(recalled.masks[i]);
        }
        recalled_tasks = recalled.tasks;
        std::string names;
        for (const auto& t : recalled.tasks) names += (names.empty() ? "" : ", ") + t;
        logger->info("{} example(s) recalled from the exemplar memory ({})", recalled.count(), names);
      } else if (context_images.empty()) {
        logger->warn("no structure of the exemplar memory matches '{}': the model runs on the text alone; "
                     "expect a poor mask (give an example, or name one of: {})",
                     text, [&] {
                       std::string all;
                       for (const auto& s : state_->memory->structures()) all += (all.empty() ? "" : ", ") + s;
                       return all;
                     }());
      }
    }
    if (!context_images.empty()) {
      images = torch::stack(context_images);  // [K, C, R, R]
      masks = torch::stack(context_masks);    // [K, 1, R, R]
    } else if (text.empty()) {
      static std::once_flag warned;
      std::call_once(warned, [&] {
        logger->warn("no examples and no text: the model runs unconditioned; expect a poor mask");
      });
    }
    auto& model = *state_->model;
    const auto context = model.encode_context(images, masks, text);

    // ---- query: all slices through the model in batches -------------------------------------
    const int64_t slices = volume.num_slices();
    std::vector<torch::Tensor> probability, variance;
    models::SegmentOptions model_options;
    model_options.ddim_steps = options.ddim_steps;
    model_options.num_samples = options.num_samples;
    for (int64_t start = 0; start < slices; start += options.batch_slices) {
      const int64_t end = std::min(slices, start + options.batch_slices);
      std::vector<torch::Tensor> planes;
      for (int64_t s = start; s < end; ++s) planes.push_back(data::image_plane(volume, s, resolution));
      // Each batch draws its own named noise stream, so batches do not share noise patterns.
      model_options.seed = derive_seed(options.seed, "diffusion-noise/" + std::to_string(start));
      auto prediction = model.segment(context, torch::stack(planes), model_options);
      probability.push_back(prediction.probability.squeeze(1).to(torch::kCPU, torch::kFloat32));
      variance.push_back(prediction.variance.squeeze(1).to(torch::kCPU, torch::kFloat32));
      logger->debug("slices {}-{} of {} done", start, end - 1, slices);
    }
    auto probability_grid = data::planes_to_source_grid(torch::cat(probability), volume).clamp(0, 1);
    auto variance_grid = data::planes_to_source_grid(torch::cat(variance), volume).clamp_min(0);

    SegmentResult result;
    result.mask = data::to_label_map(probability_grid, query.geometry, query.dims, options.threshold);
    result.probability = data::to_volume(probability_grid, query.geometry, query.dims);
    result.uncertainty = data::to_volume(variance_grid, query.geometry, query.dims);
    result.slices = slices;
    result.num_context = context.num_context;
    result.through_axis = query.dims == 3 ? volume.reorientation.source_axis[volume.through_axis] : 2;
    result.recalled_tasks = std::move(recalled_tasks);
    postprocess(result.mask, options.postprocess, result.through_axis);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    logger->info("segmented {} slices with k={}{} in {:.2f} s ({} foreground voxels)", slices, result.num_context,
                 text.empty() ? "" : " and text", result.seconds, count_foreground(result.mask));
    return result;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    const bool oom = what.find("out of memory") != std::string::npos;
    SEGICL_THROW(Error, "inference failed: " + what, state_->checkpoint,
                 oom ? "lower --batch-slices or the number of examples/--samples" : "");
  }
}

}  // namespace segicl::infer
