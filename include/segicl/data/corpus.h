// The shared corpus (../shared/data, layout in FORMAT.md) as datasets, cases and binary tasks,
// with roles and patient-level splits. Roles come from the corpus README; an `ood` or `eval`
// dataset can never be handed out for training (see TrainingView). Reads JSON only: no images.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace segicl::data {

// What a dataset may be used for (corpus README, "Roles").
enum class Role { kTrain, kOod, kEval };
// Which split a case falls in. OOD/eval datasets are all kTest.
enum class Split { kTrain, kVal, kTest };

const char* to_string(Role role);
const char* to_string(Split split);

// One binary task: a named union of label ids in one dataset (or one medscribble sub-task).
struct Task {
  std::string name;               // "<dataset>/<structure>", e.g. "btcv_ct/liver"
  std::string structure;          // "liver"
  std::vector<int> label_ids;     // voxels whose label is one of these are foreground
};

struct Case {
  std::string id, group;
  std::string image_path, label_path;  // absolute paths
  std::string task;                     // medscribble: the case's own task name; else empty
  std::map<int, std::string> labels;    // case-level label override (medscribble)
  std::string modality;                 // case-level modality override; else the dataset's
  Split split = Split::kTrain;
};

struct Dataset {
  std::string name, title, modality, region, license, source;
  int dims = 2;
  Role role = Role::kOod;  // unknown datasets default to the safe side: never trained on
  std::map<int, std::string> labels;
  std::vector<Task> tasks;  // binary tasks of this dataset (all cases share them unless `task`)
  std::vector<Case> cases;
  std::string root;         // absolute folder

  // Tasks that apply to `c` (the case's own task for medscribble, else all tasks).
  std::vector<Task> tasks_for(const Case& c) const;
};

// Split options: deterministic by group (patient) from a seed, 80/10/10 by default.
struct SplitOptions {
  uint64_t seed = 0;               // split seed (stored with packs and checkpoints)
  double val_fraction = 0.1;       // of the groups of a train-role dataset
  double test_fraction = 0.1;
};

class Corpus {
 public:
  // Reads every <root>/*/dataset.json (sorted), roles from <root>/README.md. Throws IoError if
  // root has no dataset, DataError (naming the file) for a malformed dataset.json.
  static Corpus open(const std::string& root, const SplitOptions& split = {});

  // The corpus root: `explicit_root` if non-empty, else $SEGICL_DATA, else ../shared/data next to
  // the source tree or current folder. Throws IoError with a hint when none exists.
  static std::string locate(const std::string& explicit_root = {});

  const std::vector<Dataset>& datasets() const { return datasets_; }
  const Dataset* find(const std::string& name) const;  // nullptr if absent
  // Finds "dataset/structure" (medscribble: "medscribble/ACDC/right ventricle"); nullopt if absent.
  std::optional<std::pair<const Dataset*, Task>> find_task(const std::string& task_name) const;
  const std::string& root() const { return root_; }
  const SplitOptions& split_options() const { return split_; }

 private:
  std::string root_;
  SplitOptions split_;
  std::vector<Dataset> datasets_;
};

// The only way training code sees the corpus: train-role datasets, restricted to one split. It
// cannot be built over an ood or eval dataset, so no training path can reach them.
class TrainingView {
 public:
  // `split` is kTrain for training and kVal for validation; kTest throws UsageError.
  TrainingView(const Corpus& corpus, Split split);

  struct Item {
    const Dataset* dataset;
    const Case* item;
  };
  const std::vector<Item>& cases() const { return cases_; }
  Split split() const { return split_; }

 private:
  Split split_;
  std::vector<Item> cases_;
};

}  // namespace segicl::data
