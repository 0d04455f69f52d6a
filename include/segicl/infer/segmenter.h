// The inference API: segment a query image or volume from a text instruction and/or a few example
// image-mask pairs (SegICL, paper §3: encode the context once, decode every query slice). Handles
// preprocessing, example-slice selection, batching, sampling and mapping back to the query's exact
// grid. Not a CLI or server (tools/segicl, serve) and not an evaluator (segicl_eval).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "segicl/data/exemplar_memory.h"
#include "segicl/io/volume.h"
#include "segicl/models/config.h"

namespace segicl::infer {

struct SegmentOptions {
  int ddim_steps = 4;       // DDIM steps per diffusion sample (>= 1)
  int num_samples = 1;      // diffusion samples per slice; probability = mean, uncertainty = variance
  uint64_t seed = 0;        // noise seed: same seed, same device, same threads -> same output
  double threshold = 0.5;   // mask = probability > threshold (in [0, 1])
  int slices_per_example = 3;  // slices taken from each 3D example (spread over the structure)
  int batch_slices = 16;    // query slices per forward pass (memory vs speed)
  std::string modality;     // e.g. "CT" (HU windowing) or "" (percentile normalisation); query and examples
  std::vector<std::string> postprocess;  // steps in order: "largest-cc" (3D, 6-connected),
                                         // "fill-holes" (2D per slice, in the sliced planes)
  int memory_examples = 3;  // text without examples: pairs recalled from the model's exemplar memory
                            // (0: the text alone)
  bool memory_top_up = false;  // also top examples that give fewer than memory_examples pairs up to
                               // that many (off: it helped on CHAOS, hurt on MedScribble; RESULTS.md)
  // Which recalled pairs: "similar" (the stored slices whose layout is closest to the query's
  // planes, datasets in turn; CHAOS MR 31.9 -> 35.5, BTCV 22.7 -> 27.2, MedScribble 13.3 -> 11.9
  // against "spread": RESULTS.md) or "spread" (seeded by `seed`; patients and datasets in turn).
  std::string memory_choice = "similar";
};

// One context pair. image and labels must share a grid. 2D examples give their one plane; 3D
// examples give SegmentOptions::slices_per_example slices containing the label.
struct Example {
  io::Volume image;
  io::LabelMap labels;
  int label = -1;    // -1: any non-zero label is foreground; else only this value
  std::string name;  // shown in errors (e.g. the image path); empty: "example <index>"
};

struct SegmentResult {
  io::LabelMap mask;         // {0, 1} on the query's exact grid (size, spacing, origin, direction)
  io::Volume probability;    // [0, 1] mean foreground probability, same grid
  io::Volume uncertainty;    // per-voxel variance over samples (>= 0; all 0 for one sample)
  int64_t slices = 0;        // query planes run through the model
  int64_t num_context = 0;   // k: context pairs given to the model (after the max_context cap)
  double seconds = 0;        // wall time of segment()
  int through_axis = 2;      // index axis of the query's grid the planes were cut across
  std::vector<std::string> recalled_tasks;  // memory tasks that recalled pairs came from (if any)
};

// Holds one read-only model. Thread-safety: segment() is const and safe to call concurrently
// from several threads (guards are thread-local; the model is never mutated).
class Segmenter {
 public:
  // Loads `checkpoint` (or its PATH.00, PATH.01 parts) onto `device`. IoError when neither exists,
  // FormatError for a bad checkpoint (see models/checkpoint.h). Logs the model once at info.
  // `memory`: the exemplar memory recalled for text-only requests (data/exemplar_memory.h), chosen
  // by data::resolve_memory_path ("" or "auto": the checkpoint's own when that file exists; "none":
  // none). A memory that does not fit the model (resolution, channels) is a FormatError naming it.
  explicit Segmenter(const std::string& checkpoint, const c10::Device& device = c10::Device(c10::kCPU),
                     const std::string& memory = "");
  ~Segmenter();
  Segmenter(Segmenter&&) noexcept;
  Segmenter& operator=(Segmenter&&) noexcept;

  // Segments `query` (2D image or 3D volume; RGB is converted to luminance unless the model takes
  // 3 channels) given `examples` (may be empty) and `text` (may be ""; both empty runs the model
  // unconditioned, with one warning per process). Text without examples recalls
  // options.memory_examples pairs of the named structure from the exemplar memory, if it has them
  // (result.recalled_tasks says which; with memory_top_up, examples giving fewer pairs are topped
  // up too); otherwise the model runs on the text alone. At most max_context() context pairs are used,
  // shared evenly across examples.
  // Throws UsageError (bad options), DataError naming the example (image/label grid mismatch, no
  // voxel of the chosen label, wrong channel count), ShapeError (pixel buffer not matching size),
  // Error wrapping a torch failure (with a hint for out-of-memory).
  SegmentResult segment(const io::Volume& query, const std::vector<Example>& examples, const std::string& text,
                        const SegmentOptions& options = {}) const;

  const models::ModelConfig& config() const;
  int64_t max_context() const;
  const std::string& checkpoint() const;
  c10::Device device() const;
  // The exemplar memory in use, or null.
  const data::ExemplarMemory* memory() const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
};

// Resolves "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". UsageError otherwise
// or when CUDA is asked for but unavailable.
c10::Device resolve_device(const std::string& name);

}  // namespace segicl::infer
