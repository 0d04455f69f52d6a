#include "segicl/core/seed.h"

#include <gtest/gtest.h>

namespace segicl {

TEST(DeriveSeed, IsPureAndSeparatesNames) {
  EXPECT_EQ(derive_seed(42, "episodes"), derive_seed(42, "episodes"));
  EXPECT_NE(derive_seed(42, "episodes"), derive_seed(42, "augment"));
  EXPECT_NE(derive_seed(42, "episodes"), derive_seed(43, "episodes"));
}

}  // namespace segicl
