#include "segicl/core/error.h"

#include <gtest/gtest.h>

namespace segicl {

TEST(Error, CarriesFileHintAndThrowSite) {
  try {
    SEGICL_THROW(IoError, "file not found", "/x/y.nii.gz", "check the path");
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "/x/y.nii.gz");
    EXPECT_EQ(e.hint(), "check the path");
    EXPECT_STREQ(e.kind(), "IoError");
    EXPECT_NE(e.where().find("error_test.cpp:"), std::string::npos);
  }
}

TEST(Error, ExitCodesFollowTheStyleGuide) {
  EXPECT_EQ(exit_code_for(UsageError("x")), 2);
  EXPECT_EQ(exit_code_for(ConfigError("x")), 2);
  EXPECT_EQ(exit_code_for(IoError("x")), 3);
  EXPECT_EQ(exit_code_for(DataError("x")), 3);
  EXPECT_EQ(exit_code_for(FormatError("x")), 3);
  EXPECT_EQ(exit_code_for(ShapeError("x")), 1);
  EXPECT_EQ(exit_code_for(std::runtime_error("x")), 1);
}

}  // namespace segicl
