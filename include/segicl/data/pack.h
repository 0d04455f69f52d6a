// Packs: preprocessed 2D slices at model resolution with their label maps, in one zstd-compressed
// file, so training never decodes NIfTI/PNG and a whole training pool travels to a GPU machine
// (format: docs/formats/pack.md, constants in src/data/pack_format.h). Readable without ITK.
// A pack records its purpose; only a `train` pack, which can hold nothing but train-role,
// train-split cases, feeds the training sampler.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "segicl/data/corpus.h"
#include "segicl/data/preprocess.h"

namespace segicl::data {

enum class PackPurpose { kTrain, kVal, kEval };
const char* to_string(PackPurpose purpose);

struct PackTask {
  std::string name, structure;
  int dataset = 0;                  // index into Pack::datasets()
  std::vector<int> label_ids;
  std::vector<int32_t> positives;   // slices where the task's foreground is present
  std::vector<int32_t> negatives;   // slices of the same dataset without it
};

struct PackDataset {
  std::string name, modality, region;
  Role role = Role::kTrain;
};

// An opened pack, fully in memory (decompressed at open). Immutable: safe for concurrent reads.
class Pack {
 public:
  // Reads and verifies a pack. Throws IoError (missing), FormatError naming the file for a bad
  // magic, unknown version, truncation or checksum mismatch, with a hint to re-run `segicl pack`.
  static std::shared_ptr<const Pack> open(const std::string& path);

  PackPurpose purpose() const { return purpose_; }
  int resolution() const { return resolution_; }
  int channels() const { return channels_; }
  int64_t num_slices() const { return images_.size(0); }
  const torch::Tensor& images() const { return images_; }   // [N, C, R, R] uint8 (x / 255)
  const torch::Tensor& labels() const { return labels_; }   // [N, R, R] uint8 label ids
  const std::vector<int32_t>& slice_group() const { return slice_group_; }  // global group ids
  const std::vector<int32_t>& slice_dataset() const { return slice_dataset_; }
  const std::vector<PackDataset>& datasets() const { return datasets_; }
  const std::vector<PackTask>& tasks() const { return tasks_; }
  const std::string& header_json() const { return header_json_; }

 private:
  friend class PackWriter;
  PackPurpose purpose_ = PackPurpose::kTrain;
  int resolution_ = 0, channels_ = 1;
  torch::Tensor images_, labels_;
  std::vector<int32_t> slice_group_, slice_dataset_, slice_case_, slice_index_;
  std::vector<PackDataset> datasets_;
  std::vector<PackTask> tasks_;
  std::string header_json_;
};

struct PackOptions {
  PreprocessOptions preprocess;   // resolution, intensity handling, empty-slice fraction
  int min_task_pixels = 3;        // a slice is a positive of a task with at least this many pixels
  int compression_level = 19;     // zstd level (19: ~2x smaller than 3, slower to write only)
  uint64_t seed = 0;              // which empty slices are kept
};

// Builds a pack case by case. Not thread-safe.
class PackWriter {
 public:
  PackWriter(PackPurpose purpose, const PackOptions& options);

  // Adds every kept slice of a prepared case. A kTrain writer refuses (DataError) any case whose
  // dataset is not train-role or whose split is not kTrain: OOD data can never enter training.
  void add_case(const Dataset& dataset, const Case& item, const PreparedVolume& volume);

  // Reads, prepares and adds a case from its files (needs the io library).
  void add_case_from_files(const Dataset& dataset, const Case& item);

  int64_t num_slices() const { return static_cast<int64_t>(images_.size()); }

  // Writes the pack atomically; returns its size in bytes. Throws IoError.
  int64_t write(const std::string& path, const std::string& description_json = "{}") const;

  // Writes a pack holding only `slices` (indices into `source`, in that order) with the source's
  // purpose, datasets, groups and tasks; the description is replaced. Used for exemplar memories
  // (exemplar_memory.h). DataError when `slices` is empty, UsageError for an index out of range.
  static int64_t write_subset(const Pack& source, const std::vector<int64_t>& slices, const std::string& path,
                              const std::string& description_json = "{}", int compression_level = 19);

 private:
  PackPurpose purpose_;
  PackOptions options_;
  uint64_t rng_state_;
  std::vector<torch::Tensor> images_, labels_;
  std::vector<int32_t> slice_group_, slice_dataset_, slice_case_, slice_index_;
  std::vector<PackDataset> datasets_;
  std::vector<std::pair<std::string, std::string>> groups_;  // (dataset, group) -> id by position
  struct TaskEntry {
    std::string name, structure;
    int dataset;
    std::vector<int> label_ids;
  };
  std::vector<TaskEntry> tasks_;
  int dataset_index(const Dataset& d);
  int group_index(const std::string& dataset, const std::string& group);
};

}  // namespace segicl::data
