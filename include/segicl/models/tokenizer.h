// Byte-level tokenizer for instructions: UTF-8 bytes are ids 0..255, plus PAD,
// BOS and EOS. Not a subword tokenizer (no vocabulary file to ship or version);
// ASCII is lower-cased so "Liver" and "liver" give the same ids. Never throws
// on any byte string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace segicl::models {

// Stateless apart from the length limit; safe for concurrent use.
class Tokenizer {
 public:
  static constexpr int64_t kPad = 256;
  static constexpr int64_t kBos = 257;
  static constexpr int64_t kEos = 258;
  static constexpr int64_t kVocabSize = 259;

  // `max_tokens` counts BOS and EOS; REQUIRES max_tokens >= 2.
  explicit Tokenizer(int64_t max_tokens);

  // [BOS, bytes..., EOS]: at most max_tokens ids; bytes beyond max_tokens - 2
  // are dropped (EOS is kept so the model always sees where the text ends). ""
  // gives [BOS, EOS].
  std::vector<int64_t> encode(const std::string &text) const;

  // Bytes of the non-special ids, as a string (for logs and tests).
  static std::string decode(const std::vector<int64_t> &ids);

  int64_t max_tokens() const { return max_tokens_; }

 private:
  int64_t max_tokens_;
};

}  // namespace segicl::models
