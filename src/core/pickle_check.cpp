// Structural pickle check (see pickle_check.h). Opcodes and their stack effects follow Python's
// pickletools documentation (protocol 2); the subset is what torch/csrc/jit/serialization/pickler
// writes for a serialized module and its tensors.
#include "segicl/core/pickle_check.h"

#include <cstdint>
#include <vector>

#include "segicl/core/bytes.h"
#include "segicl/core/error.h"

namespace segicl {
namespace {

constexpr const char* kHint = "the checkpoint is corrupt or not written by segicl; copy it again or retrain";
// More memo slots or nested marks than this is no checkpoint we write (the shipped models use
// ~2,000 slots and a nesting depth below 10): refuse before the unpickler reserves memory for them.
constexpr uint64_t kMaxMemo = 1u << 22;
constexpr size_t kMaxDepth = 1u << 16;

class PickleWalker {
 public:
  PickleWalker(std::string_view bytes, const std::string& entry, const std::string& path)
      : bytes_(bytes), entry_(entry), path_(path) {}

  void walk() {
    if (bytes_.size() < 2 || static_cast<unsigned char>(bytes_[0]) != 0x80)
      fail("does not start with a pickle PROTO opcode");
    while (true) {
      const size_t at = pos_;
      const unsigned char op = static_cast<unsigned char>(take(1)[0]);
      switch (op) {
        case 0x80:  // PROTO
          if (at != 0 || static_cast<unsigned char>(take(1)[0]) > 5) fail("bad PROTO", at);
          break;
        case '.':  // STOP
          if (depth_ != 1 || !marks_.empty()) fail("STOP with " + std::to_string(depth_) + " values on the stack", at);
          if (pos_ != bytes_.size()) fail("bytes after STOP", at);
          return;
        case '(':  // MARK
          if (marks_.size() >= kMaxDepth) fail("MARKs nested too deep", at);
          marks_.push_back(depth_);
          break;
        case 't': case 'l': case 'd':  // TUPLE, LIST, DICT: the values above the last MARK
          if (pop_mark(at) % 2 != 0 && op == 'd') fail("DICT with an odd number of values", at);
          push(at);
          break;
        case 'e':  // APPENDS: onto the list below the MARK
          pop_mark(at);
          need(1, at);
          break;
        case 'u':  // SETITEMS
          if (pop_mark(at) % 2 != 0) fail("SETITEMS with an odd number of values", at);
          need(1, at);
          break;
        case ')': case ']': case '}': case 'N': case 0x88: case 0x89:
          push(at);  // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, NONE, NEWTRUE, NEWFALSE
          break;
        case 'K': take(1); push(at); break;  // BININT1
        case 'M': take(2); push(at); break;  // BININT2
        case 'J': take(4); push(at); break;  // BININT
        case 'G': take(8); push(at); break;  // BINFLOAT
        case 0x8a: {  // LONG1: LibTorch reads at most 8 bytes
          const uint64_t n = static_cast<unsigned char>(take(1)[0]);
          if (n > 8) fail("LONG1 longer than 8 bytes", at);
          take(n);
          push(at);
          break;
        }
        case 'X': take(le(4)); push(at); break;  // BINUNICODE
        case 'c':  // GLOBAL module\nname\n
          line(at);
          line(at);
          push(at);
          break;
        case 0x85: pop(1, at); push(at); break;  // TUPLE1
        case 0x86: pop(2, at); push(at); break;  // TUPLE2
        case 0x87: pop(3, at); push(at); break;  // TUPLE3
        case 'a': pop(1, at); need(1, at); break;  // APPEND
        case 's': pop(2, at); need(1, at); break;  // SETITEM
        case 'R': case 'b': case 0x81: pop(2, at); push(at); break;  // REDUCE, BUILD, NEWOBJ
        case 'Q': pop(1, at); push(at); break;  // BINPERSID
        case 'q': put(le(1), at); break;  // BINPUT
        case 'r': put(le(4), at); break;  // LONG_BINPUT
        case 'h': get(le(1), at); break;  // BINGET
        case 'j': get(le(4), at); break;  // LONG_BINGET
        default:
          fail("opcode 0x" + hex(op) + " is not one LibTorch writes", at);
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t at = std::string::npos) const {
    std::string where = at == std::string::npos ? "" : " at byte " + std::to_string(at);
    SEGICL_THROW(FormatError, "record '" + entry_ + "' is not a valid pickle: " + what + where, path_, kHint);
  }
  static std::string hex(unsigned char byte) {
    const char* digits = "0123456789abcdef";
    return {digits[byte >> 4], digits[byte & 15]};
  }
  std::string_view take(uint64_t n) {
    if (bytes_.size() - pos_ < n) fail("truncated (an opcode's argument runs past the end)", pos_);
    auto out = bytes_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  uint64_t le(int n) { return *read_uint(take(n), 0, n); }  // take() checked the bounds
  void line(size_t at) {
    const size_t end = bytes_.find('\n', pos_);
    if (end == std::string_view::npos || end - pos_ > 256) fail("GLOBAL name not terminated", at);
    for (size_t i = pos_; i < end; ++i)
      if (static_cast<unsigned char>(bytes_[i]) < 0x20 || static_cast<unsigned char>(bytes_[i]) > 0x7e)
        fail("GLOBAL name is not printable", at);
    pos_ = end + 1;
  }
  // The values above the last MARK may be taken; nothing below it.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void need(size_t n, size_t at) const {
    if (depth_ < floor() + n) fail("opcode takes more values than the stack holds", at);
  }
  void pop(size_t n, size_t at) {
    need(n, at);
    depth_ -= n;
  }
  void push(size_t at) {
    if (++depth_ > kMaxMemo) fail("stack too deep", at);
  }
  // Removes the last MARK and the values above it; returns how many values that was.
  size_t pop_mark(size_t at) {
    if (marks_.empty()) fail("no MARK to collect values up to", at);
    const size_t mark = marks_.back();
    marks_.pop_back();
    const size_t above = depth_ - mark;
    depth_ = mark;
    return above;
  }
  void put(uint64_t index, size_t at) {
    if (depth_ == floor()) fail("memo PUT with nothing to store", at);
    if (index > memo_ || index >= kMaxMemo) fail("memo PUT to slot " + std::to_string(index) + " past the next free one", at);
    if (index == memo_) ++memo_;
  }
  void get(uint64_t index, size_t at) {
    if (index >= memo_) fail("memo GET of empty slot " + std::to_string(index), at);
    push(at);
  }

  std::string_view bytes_;
  const std::string& entry_;
  const std::string& path_;
  size_t pos_ = 0;
  size_t depth_ = 0;
  uint64_t memo_ = 0;
  std::vector<size_t> marks_;
};

}  // namespace

void verify_torch_pickle(std::string_view bytes, const std::string& entry, const std::string& path) {
  PickleWalker(bytes, entry, path).walk();
}

}  // namespace segicl
