// Byte-level tokenizer (see tokenizer.h). No torch here: it is pure string
// work.
#include "segicl/models/tokenizer.h"

#include <algorithm>

namespace segicl::models {

Tokenizer::Tokenizer(int64_t max_tokens) : max_tokens_(std::max<int64_t>(max_tokens, 2)) {}

std::vector<int64_t> Tokenizer::encode(const std::string &text) const {
  std::vector<int64_t> ids;
  const size_t room = static_cast<size_t>(max_tokens_ - 2);
  ids.reserve(std::min(text.size(), room) + 2);
  ids.push_back(kBos);
  for (size_t i = 0; i < text.size() && i < room; ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    // ASCII-only lower-casing: multi-byte UTF-8 sequences pass through
    // untouched.
    if (byte >= 'A' && byte <= 'Z') byte = static_cast<unsigned char>(byte - 'A' + 'a');
    ids.push_back(byte);
  }
  ids.push_back(kEos);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t> &ids) {
  std::string text;
  for (int64_t id : ids)
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  return text;
}

}  // namespace segicl::models
