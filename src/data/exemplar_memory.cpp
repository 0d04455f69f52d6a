// Exemplar memory (see exemplar_memory.h): slice selection at build time, word matching and
// seeded or similarity-ranked recall at run time.
#include "segicl/data/exemplar_memory.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "segicl/core/error.h"
#include "segicl/core/seed.h"
#include "segicl/data/examples.h"

namespace segicl::data {

namespace {

// Words of an instruction that say "do a segmentation", not what to segment.
const std::set<std::string>& filler_words() {
  static const std::set<std::string> words{
      "a",     "all",  "an",      "and",    "area",   "delineate", "draw",         "find",
      "for",   "from", "image",   "in",     "label",  "mask",      "me",           "of",
      "on",    "out",  "outline", "please", "scan",   "segment",   "segmentation", "show",
      "slice", "the",  "this",    "to",     "volume", "with"};
  return words;
}

// Groups of a task in the order they first appear, each with its positive slices in pack order.
std::vector<std::pair<int32_t, std::vector<int32_t>>> positives_by_group(const Pack& pack,
                                                                         const PackTask& task) {
  std::vector<std::pair<int32_t, std::vector<int32_t>>> groups;
  std::map<int32_t, size_t> where;
  for (int32_t s : task.positives) {
    const int32_t g = pack.slice_group()[s];
    auto [it, added] = where.emplace(g, groups.size());
    if (added) groups.push_back({g, {}});
    groups[it->second].second.push_back(s);
  }
  return groups;
}

// Context pairs of the picked (slice, task) entries into `out` (left undefined when none).
void pairs_of(const Pack& pack, const std::vector<std::pair<int32_t, const PackTask*>>& picked, Recalled& out) {
  if (picked.empty()) return;
  std::vector<torch::Tensor> images, masks;
  for (const auto& [slice, task] : picked) {
    images.push_back(pack.images()[slice].to(torch::kFloat32) / 255.0);
    auto labels = pack.labels()[slice].to(torch::kLong);
    auto ids = torch::tensor(std::vector<int64_t>(task->label_ids.begin(), task->label_ids.end()), torch::kLong);
    masks.push_back(torch::isin(labels, ids).to(torch::kFloat32).unsqueeze(0));
  }
  out.images = torch::stack(images);
  out.masks = torch::stack(masks);
}

// Unit-norm layout descriptor of images [N, C, R, R] in [0, 1]: luminance average-pooled to
// 16 x 16, minus its mean (brightness and contrast differ across modalities; the layout is what
// an example must share with the query).
torch::Tensor layout_descriptor(const torch::Tensor& images) {
  auto pooled = torch::adaptive_avg_pool2d(images.mean(1, true), {16, 16}).flatten(1);
  pooled = pooled - pooled.mean(1, true);
  return pooled / pooled.norm(2, 1, true).clamp_min(1e-6);
}

std::string shape_string(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

}  // namespace

std::vector<std::string> content_words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    if (word.size() > 3 && word.back() == 's' && word[word.size() - 2] != 's') word.pop_back();
    if (!filler_words().count(word)) words.push_back(word);
    word.clear();
  };
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      word += static_cast<char>(std::tolower(c));
    } else {
      flush();
    }
  }
  flush();
  return words;
}

std::string memory_path_for(const std::string& checkpoint) {
  std::string base = checkpoint;
  // Split checkpoints are named PATH.00, PATH.01, ...; the memory belongs to PATH.
  if (base.size() > 3 && base[base.size() - 3] == '.' &&
      std::isdigit(static_cast<unsigned char>(base[base.size() - 2])) &&
      std::isdigit(static_cast<unsigned char>(base.back())))
    base.resize(base.size() - 3);
  if (base.size() > 3 && base.compare(base.size() - 3, 3, ".pt") == 0) base.resize(base.size() - 3);
  return base + ".memory";
}

const std::vector<std::string>& memory_choices() {
  static const std::vector<std::string> names{"similar", "spread"};
  return names;
}

bool is_memory_choice(const std::string& name) {
  const auto& names = memory_choices();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string memory_choices_hint() {
  const auto& names = memory_choices();
  std::string hint = "use " + names.front();
  for (size_t i = 1; i < names.size(); ++i) hint += (i + 1 == names.size() ? " or " : ", ") + names[i];
  return hint;
}

std::string resolve_memory_path(const std::string& checkpoint, const std::string& choice) {
  if (choice == "none") return "";
  if (!choice.empty() && choice != "auto") return choice;
  const std::string own = memory_path_for(checkpoint);
  return std::filesystem::exists(own) ? own : "";
}

std::shared_ptr<const ExemplarMemory> ExemplarMemory::open(const std::string& path) {
  auto pack = Pack::open(path);
  if (pack->purpose() != PackPurpose::kTrain)
    SEGICL_THROW(FormatError,
                 std::string("an exemplar memory must be a train pack, this one is '") +
                     to_string(pack->purpose()) + "'",
                 path, "build it with `segicl model memory --pack TRAIN_PACK`");
  auto memory = std::make_shared<ExemplarMemory>();
  memory->pack_ = std::move(pack);
  memory->path_ = path;
  return memory;
}

int64_t ExemplarMemory::build(const Pack& source, const std::string& path,
                              const MemoryOptions& options) {
  if (source.purpose() != PackPurpose::kTrain)
    SEGICL_THROW(UsageError, "an exemplar memory is built from a train pack only", path,
                 "pass the pack made by `segicl pack --purpose train`");
  if (options.groups_per_task < 1 || options.slices_per_group < 1)
    SEGICL_THROW(UsageError, "groups_per_task and slices_per_group must be >= 1", path, "");
  std::set<int64_t> chosen;
  for (const auto& task : source.tasks()) {
    auto groups = positives_by_group(source, task);
    std::sort(groups.begin(), groups.end());
    if (static_cast<int>(groups.size()) > options.groups_per_task)
      groups.resize(options.groups_per_task);
    // Spread over the structure as a user's 3D example is (spread_example_slices).
    for (const auto& [group, slices] : groups)
      for (int64_t rank : spread_ranks(static_cast<int64_t>(slices.size()), options.slices_per_group))
        chosen.insert(slices[rank]);
  }
  const nlohmann::json description{{"kind", "exemplar-memory"},
                                   {"groups_per_task", options.groups_per_task},
                                   {"slices_per_group", options.slices_per_group}};
  return PackWriter::write_subset(source, std::vector<int64_t>(chosen.begin(), chosen.end()), path,
                                  description.dump(), options.compression_level);
}

void ExemplarMemory::require_fit(int64_t resolution, int64_t channels) const {
  if (pack_->resolution() != resolution || pack_->channels() != channels)
    SEGICL_THROW(FormatError,
                 "exemplar memory is " + std::to_string(pack_->resolution()) + "^2 x " +
                     std::to_string(pack_->channels()) + " channel(s) but the model takes " +
                     std::to_string(resolution) + "^2 x " + std::to_string(channels),
                 path_, "build the memory from a pack at the model's resolution (`segicl model memory`)");
}

std::vector<std::string> ExemplarMemory::match(const std::string& instruction) const {
  const auto said = content_words(instruction);
  const std::set<std::string> said_set(said.begin(), said.end());
  std::vector<std::string> best;
  size_t best_words = 0;
  for (const auto& task : pack_->tasks()) {
    if (task.positives.empty()) continue;
    const auto words = content_words(task.structure);
    const std::set<std::string> needed(words.begin(), words.end());
    if (needed.empty()) continue;
    bool all = std::all_of(needed.begin(), needed.end(),
                           [&](const std::string& w) { return said_set.count(w) > 0; });
    if (!all) continue;
    if (needed.size() > best_words) best.clear(), best_words = needed.size();
    if (needed.size() == best_words) best.push_back(task.name);
  }
  return best;
}

Recalled ExemplarMemory::recall(const std::string& instruction, int count, uint64_t seed) const {
  Recalled out;
  if (count < 1) return out;
  out.tasks = match(instruction);
  if (out.tasks.empty()) return out;
  std::mt19937_64 rng(derive_seed(seed, "exemplar-memory/" + instruction));
  // One queue of patients per matched task, shuffled; tasks take turns so every matched dataset
  // is represented before any gives a second patient, and a patient gives a second slice only
  // when every patient has given one.
  struct Queue {
    const PackTask* task;
    std::vector<std::pair<int32_t, std::vector<int32_t>>> groups;
  };
  std::vector<Queue> queues;
  for (const auto& task : pack_->tasks()) {
    if (std::find(out.tasks.begin(), out.tasks.end(), task.name) == out.tasks.end()) continue;
    Queue q{&task, positives_by_group(*pack_, task)};
    std::shuffle(q.groups.begin(), q.groups.end(), rng);
    for (auto& group : q.groups) std::shuffle(group.second.begin(), group.second.end(), rng);
    queues.push_back(std::move(q));
  }
  std::shuffle(queues.begin(), queues.end(), rng);
  size_t most_groups = 0, most_slices = 0;
  for (const auto& q : queues) {
    most_groups = std::max(most_groups, q.groups.size());
    for (const auto& group : q.groups) most_slices = std::max(most_slices, group.second.size());
  }
  // Round r takes the r-th slice of every patient; within a round, patient g of every task.
  std::vector<std::pair<int32_t, const PackTask*>> picked;
  auto full = [&] { return static_cast<int>(picked.size()) >= count; };
  for (size_t round = 0; round < most_slices && !full(); ++round)
    for (size_t g = 0; g < most_groups && !full(); ++g)
      for (const auto& q : queues)
        if (!full() && g < q.groups.size() && round < q.groups[g].second.size())
          picked.push_back({q.groups[g].second[round], q.task});
  pairs_of(*pack_, picked, out);
  return out;
}

Recalled ExemplarMemory::recall_similar(const std::string& instruction, int count,
                                        const torch::Tensor& query_planes) const {
  Recalled out;
  if (count < 1) return out;
  if (query_planes.dim() != 4 || query_planes.size(0) < 1 || query_planes.size(1) != pack_->channels() ||
      query_planes.size(2) != pack_->resolution() || query_planes.size(3) != pack_->resolution())
    SEGICL_THROW(ShapeError,
                 "query planes " + shape_string(query_planes) + " do not fit the memory's " +
                     std::to_string(pack_->channels()) + " x " + std::to_string(pack_->resolution()) + "²",
                 path_, "pass the query's planes at the model resolution");
  out.tasks = match(instruction);
  if (out.tasks.empty()) return out;
  std::vector<std::pair<int32_t, const PackTask*>> candidates;
  for (const auto& task : pack_->tasks())
    if (std::find(out.tasks.begin(), out.tasks.end(), task.name) != out.tasks.end())
      for (int32_t s : task.positives) candidates.push_back({s, &task});
  std::vector<int64_t> indices;
  for (const auto& c : candidates) indices.push_back(c.first);
  auto stored = pack_->images().index_select(0, torch::tensor(indices)).to(torch::kFloat32) / 255.0;
  // [candidates, queries] cosine similarities of the pooled, centred images.
  auto similarity = layout_descriptor(stored).matmul(layout_descriptor(query_planes.to(torch::kFloat32)).t());
  auto best = std::get<0>(similarity.max(1));
  auto score = best.accessor<float, 1>();
  // Per matched task, its slices best first; tasks take turns (the task with the best slice
  // first), so every matched dataset gives its closest patient before any gives a second one.
  std::map<std::string, std::vector<int64_t>> by_task;  // by name: a fixed order for ties
  for (size_t i = 0; i < candidates.size(); ++i) by_task[candidates[i].second->name].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> queues;
  for (auto& [task, members] : by_task) {
    std::stable_sort(members.begin(), members.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    queues.push_back(members);
  }
  std::stable_sort(queues.begin(), queues.end(),
                   [&](const auto& a, const auto& b) { return score[a.front()] > score[b.front()]; });
  // Round `limit`: a patient may give its limit-th slice only once every patient that could has
  // given limit - 1 (as recall() does), so `count` above the number of patients still fills up.
  std::vector<std::pair<int32_t, const PackTask*>> picked;
  std::vector<bool> taken(candidates.size(), false);
  std::map<int32_t, int> uses;  // patient -> slices given
  for (int limit = 1; static_cast<int>(picked.size()) < count; ++limit) {
    bool any = false;
    for (bool progress = true; progress && static_cast<int>(picked.size()) < count;) {
      progress = false;
      for (const auto& queue : queues) {
        if (static_cast<int>(picked.size()) >= count) break;
        for (int64_t i : queue) {
          const int32_t patient = pack_->slice_group()[candidates[i].first];
          if (taken[i] || uses[patient] >= limit) continue;
          taken[i] = true;
          ++uses[patient];
          picked.push_back(candidates[i]);
          progress = any = true;
          break;
        }
      }
    }
    if (!any) break;  // every candidate taken
  }
  pairs_of(*pack_, picked, out);
  return out;
}

std::vector<std::string> ExemplarMemory::structures() const {
  std::set<std::string> names;
  for (const auto& task : pack_->tasks())
    if (!task.positives.empty()) names.insert(task.structure);
  return {names.begin(), names.end()};
}

}  // namespace segicl::data
