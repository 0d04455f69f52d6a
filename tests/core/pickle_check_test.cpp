// Tests of verify_torch_pickle on the pickles LibTorch writes and on hand-made broken ones.
#include "segicl/core/pickle_check.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "segicl/core/error.h"
#include "segicl/core/zip_check.h"

namespace segicl {
namespace {

std::string torch_archive() {
  torch::serialize::OutputArchive archive;
  archive.write("meta", c10::IValue(std::string("{\"format\": \"x\"}")));
  archive.write("flag", c10::IValue(true));
  archive.write("scale", c10::IValue(0.25));
  archive.write("steps", c10::IValue(int64_t{1} << 40));
  // More than 256 memo slots, so LONG_BINPUT / LONG_BINGET appear too.
  for (int i = 0; i < 200; ++i) archive.write("w." + std::to_string(i), torch::full({2, 3}, i, torch::kFloat32));
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

// Expects a FormatError naming the file and the record, whose message contains `what`.
void expect_refused(const std::string& pickle, const std::string& what) {
  try {
    verify_torch_pickle(pickle, "archive/data.pkl", "model.pt");
    FAIL() << "accepted: " << what;
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), "model.pt");
    EXPECT_NE(e.message().find("archive/data.pkl"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find(what), std::string::npos) << e.message();
  }
}

TEST(PickleCheck, EveryPickleLibTorchWritesPasses) {
  const std::string bytes = torch_archive();
  int pickles = 0;
  for (const auto& entry : zip_entries(bytes, "model.pt")) {
    const bool pickle = entry.name.find(".pkl") != std::string::npos || entry.name.find("debug_pkl") != std::string::npos;
    if (!pickle) continue;
    ++pickles;
    ASSERT_TRUE(entry.stored) << entry.name;
    EXPECT_NO_THROW(verify_torch_pickle(entry.data, entry.name, "model.pt")) << entry.name;
  }
  EXPECT_GE(pickles, 2);  // data.pkl, constants.pkl (and the debug pickles)
}

TEST(PickleCheck, SmallValidPicklePasses) {
  // PROTO 2, EMPTY_DICT, BINPUT 0, MARK, BINUNICODE "a", BININT1 1, SETITEMS, STOP
  EXPECT_NO_THROW(verify_torch_pickle(std::string("\x80\x02}q\x00(X\x01\x00\x00\x00" "aK\x01u.", 16), "p", "f"));
}

TEST(PickleCheck, MemoPutFarPastTheNextSlotIsRefused) {
  // LONG_BINPUT 0xfffffffe: LibTorch grows its memo table to that index (tens of GB).
  expect_refused(std::string("\x80\x02K\x01r\xfe\xff\xff\xff.", 10), "memo PUT");
}

TEST(PickleCheck, MemoGetOfAnEmptySlotIsRefused) {
  expect_refused(std::string("\x80\x02h\x03.", 5), "memo GET");
}

TEST(PickleCheck, StackUnderflowIsRefused) {
  expect_refused(std::string("\x80\x02K\x01\x86.", 6), "more values than the stack holds");  // TUPLE2 of one value
  expect_refused(std::string("\x80\x02K\x01(\x85.", 7), "more values than the stack holds");  // TUPLE1 across a MARK
  expect_refused(std::string("\x80\x02K\x01t.", 6), "no MARK");
}

TEST(PickleCheck, LengthPastTheEndIsRefused) {
  // BINUNICODE that says 4 GB: LibTorch allocated it before reading.
  expect_refused(std::string("\x80\x02X\xff\xff\xff\xff" "abc.", 11), "truncated");
  expect_refused(std::string("\x80\x02", 2), "truncated");
}

TEST(PickleCheck, OpcodesLibTorchNeverWritesAreRefused) {
  expect_refused(std::string("\x80\x02K\x01" "0N.", 7), "opcode 0x30");  // POP
}

TEST(PickleCheck, StopMustEndTheStreamWithOneValue) {
  expect_refused(std::string("\x80\x02K\x01K\x02.", 7), "STOP with 2 values");
  expect_refused(std::string("\x80\x02K\x01.K", 7), "bytes after STOP");
}

}  // namespace
}  // namespace segicl
