// Fuzz target: the instruction tokenizers, models::Tokenizer (byte-level, segicl model) and
// models::hash_words (word hashes, crossconv model), on any byte string. Both promise never to
// throw; the target also checks their output contracts. Seeds: fuzz/corpus/fuzz_text.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "segicl/models/crossconv.h"
#include "segicl/models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  using segicl::models::Tokenizer;
  const int64_t max_tokens = 2 + data[0];       // REQUIRES max_tokens >= 2
  const int64_t buckets = 2 + 37 * data[1];     // REQUIRES buckets >= 2
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);

  const Tokenizer tokenizer(max_tokens);
  const auto ids = tokenizer.encode(text);
  if (static_cast<int64_t>(ids.size()) > max_tokens || ids.size() < 2) __builtin_trap();
  if (ids.front() != Tokenizer::kBos || ids.back() != Tokenizer::kEos) __builtin_trap();
  for (size_t i = 1; i + 1 < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] > 255) __builtin_trap();
  const std::string decoded = Tokenizer::decode(ids);
  if (decoded.size() != ids.size() - 2) __builtin_trap();

  for (int64_t id : segicl::models::hash_words(text, buckets))
    if (id < 1 || id >= buckets) __builtin_trap();  // 0 is the padding id
  return 0;
}
