// Checkpoint files: one torch archive holding a `meta` JSON string (format, version, resolved model
// config, model kind, stage, step, seeds, tokenizer, preprocessing, provenance), the weights
// (fp32, or fp16 for shipping), and optional trainer sections (optimizer, sampler and RNG state).
// The loader reads and checks meta before any tensor. Format page: docs/formats/checkpoint.md.
// Writes are atomic. Not a training loop.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

#include "segicl/core/config.h"
#include "segicl/models/segicl_model.h"

namespace segicl::models {

inline constexpr const char* kCheckpointFormat = "segicl-checkpoint";
inline constexpr int kCheckpointVersion = 1;

struct SaveOptions {
  bool half = false;  // store floating weights as fp16 (shipping); loading converts back to fp32
  // Extra sections (optimizer, sampler state) written into the same archive, so a checkpoint and
  // its trainer state can never disagree.
  std::function<void(torch::serialize::OutputArchive&)> extra;
};

// Saves `model` with `meta` (format, format_version, config and model_kind are filled in).
// Atomic; IoError on failure.
void save_checkpoint(const std::string& path, SegICLModelImpl& model, config::Json meta,
                     const SaveOptions& options = {});

// Reads only the meta JSON. FormatError (naming the file, with a hint) for a file that is not a
// segicl checkpoint, is truncated or corrupt, or has an unsupported format_version.
config::Json read_checkpoint_meta(const std::string& path);

struct LoadedCheckpoint {
  SegICLModel model{nullptr};
  config::Json meta;
};

// Rebuilds the model from the checkpoint's own config (never from current presets) and loads its
// weights onto `device`. FormatError on any missing or mis-shaped tensor (architecture mismatch),
// naming the tensor. `extra` may read trainer sections from the archive.
LoadedCheckpoint load_checkpoint(const std::string& path, const torch::Device& device = torch::kCPU,
                                 const std::function<void(torch::serialize::InputArchive&)>& extra = {});

// Loads weights from a checkpoint into an existing model with the same architecture (e.g. stage 2
// starting from stage 1). Returns the checkpoint's meta. Same errors as load_checkpoint.
config::Json load_weights_into(const std::string& path, SegICLModelImpl& model);

// Weight-space interpolation of two models of one architecture, for a checkpoint between a model
// and its fine-tuned continuation (WiSE-FT, Wortsman et al., CVPR 2022: the interpolation keeps
// much of the fine-tune's gain on its own distribution and of the start's robustness elsewhere).
// Sets every floating parameter and buffer of `into` to (1 - t) * into + t * other; integer
// buffers keep `into`'s. UsageError when the configs differ (`into_name` / `other_name` name them).
void interpolate_weights(SegICLModelImpl& into, const SegICLModelImpl& other, double t,
                         const std::string& into_name, const std::string& other_name);

}  // namespace segicl::models
