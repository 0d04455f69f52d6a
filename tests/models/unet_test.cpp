// UNet2d: output shapes for several depths, the input contract, and that it is a function of its
// input only (InstanceNorm: the same in train and eval mode, independent of the batch).
#include "segicl/models/unet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "segicl/core/error.h"

namespace segicl::models {
namespace {

TEST(UNet2d, KeepsTheSpatialSizeAndGivesOneLogitPerTask) {
  torch::manual_seed(0);
  for (int64_t levels : {1, 2, 4}) {
    UNetOptions o;
    o.out_channels = 3;
    o.base_features = 4;
    o.levels = levels;
    UNet2d net(o);
    auto logits = net->forward(torch::rand({2, 1, 32, 48}));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3, 32, 48})) << "levels " << levels;
  }
}

TEST(UNet2d, RejectsWrongChannelsAndSizesNotDivisibleByThePooling) {
  UNetOptions o;
  o.base_features = 4;
  o.levels = 4;
  UNet2d net(o);
  EXPECT_THROW(net->forward(torch::rand({1, 3, 32, 32})), ShapeError);
  EXPECT_THROW(net->forward(torch::rand({1, 1, 36, 32})), ShapeError);
  EXPECT_THROW(net->forward(torch::rand({1, 32, 32})), ShapeError);
  o.levels = 0;
  EXPECT_THROW(UNet2d{o}, UsageError);
}

TEST(UNet2d, PredictionOfOnePlaneDoesNotDependOnTheRestOfTheBatch) {
  torch::manual_seed(1);
  UNetOptions o;
  o.base_features = 4;
  o.levels = 3;
  UNet2d net(o);
  torch::NoGradGuard no_grad;
  auto batch = torch::rand({3, 1, 16, 16});
  auto together = net->forward(batch);
  auto alone = net->forward(batch.narrow(0, 1, 1));
  EXPECT_TRUE(torch::allclose(together.narrow(0, 1, 1), alone, 1e-5, 1e-5));
}

}  // namespace
}  // namespace segicl::models
