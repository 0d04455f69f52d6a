// Byte tokenizer: specials, lower-casing, truncation, robustness to arbitrary
// bytes.
#include "segicl/models/tokenizer.h"

#include <gtest/gtest.h>

#include <random>

namespace segicl::models {
namespace {

TEST(Tokenizer, EmptyStringIsBosEos) {
  Tokenizer tok(16);
  EXPECT_EQ(tok.encode(""), (std::vector<int64_t>{Tokenizer::kBos, Tokenizer::kEos}));
}

TEST(Tokenizer, LowerCasesAsciiOnly) {
  Tokenizer tok(64);
  EXPECT_EQ(tok.encode("LiVeR"), tok.encode("liver"));
  EXPECT_EQ(Tokenizer::decode(tok.encode("Liver CT")), "liver ct");
}

TEST(Tokenizer, TruncatesKeepingBosAndEos) {
  Tokenizer tok(5);
  auto ids = tok.encode("abcdefgh");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids.front(), Tokenizer::kBos);
  EXPECT_EQ(ids.back(), Tokenizer::kEos);
  EXPECT_EQ(Tokenizer::decode(ids), "abc");
}

TEST(Tokenizer, EmojiAndRandomBytesGiveValidIds) {
  Tokenizer tok(64);
  auto emoji = tok.encode("segment the liver \xF0\x9F\xAB\x80 please");
  EXPECT_EQ(Tokenizer::decode(emoji), "segment the liver \xF0\x9F\xAB\x80 please");
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(rng() % 100, '\0');
    for (auto &b : bytes) b = static_cast<char>(rng() & 0xFF);
    auto ids = tok.encode(bytes);
    ASSERT_LE(static_cast<int64_t>(ids.size()), tok.max_tokens());
    for (int64_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, Tokenizer::kVocabSize);
      ASSERT_NE(id, Tokenizer::kPad);
    }
  }
}

}  // namespace
}  // namespace segicl::models
