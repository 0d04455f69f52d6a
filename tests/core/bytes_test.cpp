// Tests of read_uint, the bounds-checked field reader of the zip, pickle, BMP and TIFF checks.
#include "segicl/core/bytes.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace segicl {
namespace {

TEST(ReadUint, ReadsEitherByteOrder) {
  const std::string bytes("\x01\x02\x03\x04\x05\x06\x07\x08\x09", 9);
  EXPECT_EQ(read_uint(bytes, 0, 2), 0x0201u);
  EXPECT_EQ(read_uint(bytes, 0, 2, /*little=*/false), 0x0102u);
  EXPECT_EQ(read_uint(bytes, 1, 4), 0x05040302u);
  EXPECT_EQ(read_uint(bytes, 1, 8), 0x0908070605040302u);
  EXPECT_EQ(read_uint(bytes, 1, 8, /*little=*/false), 0x0203040506070809u);
  EXPECT_EQ(read_uint(std::string(8, '\xff'), 0, 8), std::numeric_limits<uint64_t>::max());
}

TEST(ReadUint, AFieldNotWhollyInsideIsNullopt) {
  const std::string bytes(10, 'x');
  EXPECT_TRUE(read_uint(bytes, 6, 4).has_value());  // ends exactly at the end
  EXPECT_FALSE(read_uint(bytes, 7, 4).has_value());
  EXPECT_FALSE(read_uint(bytes, 10, 1).has_value());
  EXPECT_FALSE(read_uint(bytes, 11, 1).has_value());
  // Offsets from a file: at + size must not wrap around.
  EXPECT_FALSE(read_uint(bytes, std::numeric_limits<uint64_t>::max() - 1, 4).has_value());
  EXPECT_FALSE(read_uint("", 0, 1).has_value());
  EXPECT_FALSE(read_uint(bytes, 0, 0).has_value());
  EXPECT_FALSE(read_uint(bytes, 0, 9).has_value());
}

}  // namespace
}  // namespace segicl
