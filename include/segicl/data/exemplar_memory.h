// Exemplar memory: a few image-mask slices per structure of the training pool, kept beside a model
// and recalled by the instruction when the user gives no example (text only, the paper's ICL-0).
// The shipped CrossBlock model cannot place a structure from text alone at the compute it had
// (reports/RESULTS.md: empty masks), but it can segment from examples, and the training pool
// holds examples of every structure it has seen; "segment the liver" becomes "segment like these
// training-pool livers". A memory is a pack (pack.h) holding only train-role, train-split slices,
// so it can never carry evaluation data. Not an example selector for user examples (examples.h).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "segicl/data/pack.h"

namespace segicl::data {

struct MemoryOptions {
  int groups_per_task = 16;  // patients kept per task (the first ones by group id)
  int slices_per_group = 1;  // slices per patient, spread over the structure as spread_ranks does
                             // (1: the middle one; 3 spread ones did worse as examples, RESULTS.md)
  int compression_level = 19;
};

// What one recall returns: context pairs at the memory's resolution, ready for the model.
struct Recalled {
  torch::Tensor images;            // [K, C, R, R] float in [0, 1]; undefined when nothing matched
  torch::Tensor masks;             // [K, 1, R, R] float {0, 1}
  std::vector<std::string> tasks;  // the matched tasks, e.g. "btcv_ct/liver" (empty: no match)
  int64_t count() const { return images.defined() ? images.size(0) : 0; }
};

class ExemplarMemory {
 public:
  // Opens a memory file (a pack). IoError/FormatError naming the file as Pack::open does, and
  // FormatError when it is not a train pack (a memory only ever holds training-pool data).
  static std::shared_ptr<const ExemplarMemory> open(const std::string& path);

  // Picks the memory slices from a train pack: per task, the first `groups_per_task` groups,
  // `slices_per_group` positives of each spread over the structure (spread_ranks), and writes them
  // as a pack.
  // Returns the file size in bytes. UsageError for a non-train pack or bad options.
  static int64_t build(const Pack& source, const std::string& path,
                       const MemoryOptions& options = {});

  // Tasks whose structure the instruction names: every content word of the structure ("left",
  // "kidney") must be in the instruction (plural "kidneys" counts), and among those only the most
  // specific (most words) are kept, so "the left kidney" does not also recall plain "kidney".
  std::vector<std::string> match(const std::string& instruction) const;

  // Up to `count` pairs for the instruction, from different patients of the matched tasks taken
  // in turn (a pure function of instruction, count and seed); nothing when no task matches.
  Recalled recall(const std::string& instruction, int count, uint64_t seed) const;

  // Up to `count` pairs for the instruction, the ones whose image looks most like the query:
  // query_planes [N, C, R, R] at the memory's resolution (a volume's slices, or one 2D image); a
  // stored slice scores the best cosine similarity of its image to any query plane, both
  // average-pooled to 16 x 16 and centred, so body outline and layout count, not brightness.
  // Matched tasks take turns (the one with the best slice first), each giving its best slice of a
  // patient not yet used, so every matched dataset is represented before any gives a second; a
  // patient gives a second slice only when no unused patient is left. Deterministic (ties: pack
  // order). Nothing when no task matches. ShapeError when the planes do
  // not fit the memory.
  Recalled recall_similar(const std::string& instruction, int count, const torch::Tensor& query_planes) const;

  // FormatError naming the memory file unless its slices are resolution^2 x channels (the model's).
  void require_fit(int64_t resolution, int64_t channels) const;

  const Pack& pack() const { return *pack_; }
  const std::string& path() const { return path_; }
  // The structures it can recall, sorted, without duplicates.
  std::vector<std::string> structures() const;

 private:
  std::shared_ptr<const Pack> pack_;
  std::string path_;
};

// The memory that belongs to a checkpoint: "models/x.pt" -> "models/x.memory" (".pt" and its
// split-part suffix dropped). The file may not exist.
std::string memory_path_for(const std::string& checkpoint);

// Which memory a model run uses: "" or "auto" takes memory_path_for(checkpoint) when that file
// exists (else none), "none" none, anything else is the path itself (opening it may fail).
// Returns "" for none.
std::string resolve_memory_path(const std::string& checkpoint, const std::string& choice);

// How a recall picks its pairs, by the name options and requests use: "similar"
// (ExemplarMemory::recall_similar) and "spread" (ExemplarMemory::recall), in that order.
const std::vector<std::string>& memory_choices();
bool is_memory_choice(const std::string& name);
// The hint for an unknown choice, from that list: "use similar or spread".
std::string memory_choices_hint();

// Lower-cased alphanumeric words of `text` without instruction filler ("segment", "the", ...) and
// with a plural "s" dropped; shared by match() and its tests.
std::vector<std::string> content_words(const std::string& text);

}  // namespace segicl::data
