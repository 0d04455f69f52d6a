// Corpus reader: dataset.json files, README roles, seeded group splits.
#include "segicl/data/corpus.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/seed.h"

namespace segicl::data {
namespace fs = std::filesystem;
using Json = nlohmann::json;

const char* to_string(Role role) {
  switch (role) {
    case Role::kTrain: return "train";
    case Role::kOod: return "ood";
    case Role::kEval: return "eval";
  }
  return "?";
}

const char* to_string(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kVal: return "val";
    case Split::kTest: return "test";
  }
  return "?";
}

std::vector<Task> Dataset::tasks_for(const Case& c) const {
  if (c.task.empty()) return tasks;
  std::vector<Task> own;
  for (const auto& t : tasks)
    if (t.name == name + "/" + c.task) own.push_back(t);
  return own;
}

namespace {

struct ReadmeEntry {
  Role role = Role::kOod;
  std::set<std::string> test_groups;  // fixed test split given in the README, if any
};

// Parses the roles table of the corpus README: "| `name` | dims | ... | role | split |".
std::map<std::string, ReadmeEntry> read_roles(const std::string& readme_path) {
  std::map<std::string, ReadmeEntry> roles;
  std::ifstream in(readme_path);
  if (!in) return roles;  // no README: every dataset stays ood (the safe default)
  std::string line;
  static const std::regex row(R"(^\|\s*`([a-z0-9_]+)`\s*\|(.*)\|\s*$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    std::vector<std::string> cells;
    std::stringstream rest(m[2].str());
    std::string cell;
    while (std::getline(rest, cell, '|')) cells.push_back(cell);
    if (cells.size() < 7) continue;
    const std::string& role_cell = cells[5];
    const std::string& split_cell = cells[6];
    ReadmeEntry entry;
    if (role_cell.find("ood") != std::string::npos) entry.role = Role::kOod;
    else if (role_cell.find("eval") != std::string::npos) entry.role = Role::kEval;
    else if (role_cell.find("train") != std::string::npos) entry.role = Role::kTrain;
    static const std::regex test_list(R"(test\s*=\s*([0-9 ]+))");
    std::smatch t;
    if (std::regex_search(split_cell, t, test_list)) {
      std::stringstream ids(t[1].str());
      std::string id;
      while (ids >> id) entry.test_groups.insert(id);
    }
    roles[m[1].str()] = entry;
  }
  return roles;
}

std::map<int, std::string> read_labels(const Json& j) {
  std::map<int, std::string> labels;
  for (auto it = j.begin(); it != j.end(); ++it) labels[std::stoi(it.key())] = it->get<std::string>();
  return labels;
}

// Fraction in [0, 1) for a group, stable across runs and platforms.
double group_unit(uint64_t seed, const std::string& dataset, const std::string& group) {
  return (derive_seed(seed, dataset + "/" + group) >> 11) * (1.0 / 9007199254740992.0);
}

Dataset read_dataset(const fs::path& folder, const std::map<std::string, ReadmeEntry>& roles,
                     const SplitOptions& split) {
  const std::string json_path = (folder / "dataset.json").string();
  Json j;
  try {
    j = Json::parse(read_file(json_path));
  } catch (const Json::exception& e) {
    SEGICL_THROW(DataError, std::string("malformed dataset.json: ") + e.what(), json_path,
                 "see ../shared/data/FORMAT.md for the expected fields");
  }
  Dataset d;
  try {
    d.name = j.value("name", folder.filename().string());
    d.title = j.value("title", "");
    d.modality = j.value("modality", "");
    d.region = j.value("region", "");
    d.license = j.value("license", "");
    d.source = j.value("source", "");
    d.dims = j.at("dims").get<int>();
    d.root = fs::absolute(folder).lexically_normal().string();
    if (j.contains("labels")) d.labels = read_labels(j["labels"]);
    auto role = roles.find(d.name);
    const ReadmeEntry* entry = role == roles.end() ? nullptr : &role->second;
    d.role = entry ? entry->role : Role::kOod;

    if (j.contains("tasks")) {
      for (auto it = j["tasks"].begin(); it != j["tasks"].end(); ++it)
        d.tasks.push_back({d.name + "/" + it.key(), it.key(), it->get<std::vector<int>>()});
    } else {
      for (const auto& [id, structure] : d.labels) d.tasks.push_back({d.name + "/" + structure, structure, {id}});
    }
    std::set<std::string> own_tasks;
    for (const auto& c : j.at("cases")) {
      Case item;
      item.id = c.at("id").get<std::string>();
      item.group = c.value("group", item.id);
      item.image_path = (folder / c.at("image").get<std::string>()).lexically_normal().string();
      item.label_path = (folder / c.at("label").get<std::string>()).lexically_normal().string();
      item.task = c.value("task", "");
      item.modality = c.value("modality", "");
      if (c.contains("labels")) item.labels = read_labels(c["labels"]);
      if (d.role != Role::kTrain) {
        item.split = Split::kTest;
      } else if (entry && !entry->test_groups.empty()) {
        // A fixed test list (BTCV's Synapse split); the rest is split train/val by group.
        if (entry->test_groups.count(item.group)) item.split = Split::kTest;
        else item.split = group_unit(split.seed, d.name, item.group) < split.val_fraction / (1 - split.test_fraction)
                              ? Split::kVal : Split::kTrain;
      } else {
        double u = group_unit(split.seed, d.name, item.group);
        item.split = u < split.test_fraction ? Split::kTest
                     : u < split.test_fraction + split.val_fraction ? Split::kVal
                                                                    : Split::kTrain;
      }
      if (!item.task.empty() && own_tasks.insert(item.task).second) {
        std::vector<int> ids;
        for (const auto& [id, _] : item.labels) ids.push_back(id);
        if (ids.empty()) ids.push_back(1);
        std::string structure = item.labels.empty() ? item.task : item.labels.begin()->second;
        d.tasks.push_back({d.name + "/" + item.task, structure, ids});
      }
      d.cases.push_back(std::move(item));
    }
    if (!own_tasks.empty()) {
      // A multi-task collection: only the per-case tasks exist, not the top-level labels.
      d.tasks.erase(std::remove_if(d.tasks.begin(), d.tasks.end(),
                                   [&](const Task& t) {
                                     return !own_tasks.count(t.name.substr(d.name.size() + 1));
                                   }),
                    d.tasks.end());
    }
  } catch (const Json::exception& e) {
    SEGICL_THROW(DataError, std::string("dataset.json misses a field: ") + e.what(), json_path,
                 "see ../shared/data/FORMAT.md for the expected fields");
  }
  // Splits by group must never straddle: enforce it rather than trust the inputs.
  std::map<std::string, Split> group_split;
  for (const auto& c : d.cases) {
    auto [it, inserted] = group_split.emplace(c.group, c.split);
    if (!inserted && it->second != c.split)
      SEGICL_THROW(DataError, "group " + c.group + " straddles two splits", json_path, "");
  }
  return d;
}

}  // namespace

std::string Corpus::locate(const std::string& explicit_root) {
  std::vector<std::string> candidates;
  if (!explicit_root.empty()) {
    if (!fs::is_directory(explicit_root))
      SEGICL_THROW(IoError, "data folder not found", explicit_root,
                   "pass --data with the folder holding <dataset>/dataset.json");
    return explicit_root;
  }
  if (const char* env = std::getenv("SEGICL_DATA")) candidates.push_back(env);
#ifdef SEGICL_SOURCE_DIR
  candidates.push_back(std::string(SEGICL_SOURCE_DIR) + "/../shared/data");
#endif
  candidates.push_back("../shared/data");
  for (const auto& c : candidates)
    if (fs::is_directory(c)) return fs::canonical(c).string();
  SEGICL_THROW(IoError, "no corpus found", "",
               "pass --data DIR or set SEGICL_DATA to the folder holding <dataset>/dataset.json");
}

Corpus Corpus::open(const std::string& root, const SplitOptions& split) {
  if (!fs::is_directory(root))
    SEGICL_THROW(IoError, "data folder not found", root, "pass --data with the corpus folder");
  Corpus corpus;
  corpus.root_ = fs::absolute(root).lexically_normal().string();
  corpus.split_ = split;
  auto roles = read_roles((fs::path(root) / "README.md").string());
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory() && fs::exists(entry.path() / "dataset.json")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  if (folders.empty())
    SEGICL_THROW(IoError, "no dataset.json below the data folder", root,
                 "the folder must hold <dataset>/dataset.json (see FORMAT.md)");
  for (const auto& folder : folders) corpus.datasets_.push_back(read_dataset(folder, roles, split));
  return corpus;
}

const Dataset* Corpus::find(const std::string& name) const {
  for (const auto& d : datasets_)
    if (d.name == name) return &d;
  return nullptr;
}

std::optional<std::pair<const Dataset*, Task>> Corpus::find_task(const std::string& task_name) const {
  auto slash = task_name.find('/');
  if (slash == std::string::npos) return std::nullopt;
  const Dataset* d = find(task_name.substr(0, slash));
  if (!d) return std::nullopt;
  for (const auto& t : d->tasks)
    if (t.name == task_name) return std::make_pair(d, t);
  return std::nullopt;
}

TrainingView::TrainingView(const Corpus& corpus, Split split) : split_(split) {
  if (split == Split::kTest)
    SEGICL_THROW(UsageError, "the test split is never used for training", "",
                 "train on Split::kTrain, validate on Split::kVal");
  for (const auto& d : corpus.datasets()) {
    if (d.role != Role::kTrain) continue;  // ood and eval datasets never enter training
    for (const auto& c : d.cases)
      if (c.split == split) cases_.push_back({&d, &c});
  }
}

}  // namespace segicl::data
