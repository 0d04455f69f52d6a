// The supervised U-Net baseline: patient folds never train on a query patient, the U-Net learns a
// small synthetic two-task problem, training is reproducible from the seed, and the protocol's
// "unet" method scores each query once with its fold recorded.
#include "segicl/eval/supervised_baseline.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "segicl/core/error.h"
#include "segicl/eval/protocol.h"
#include "segicl/io/volume.h"
#include "toy_corpus.h"

namespace segicl::eval {
namespace {
namespace fs = std::filesystem;

// Patients p00..p19, p03 and p11 with two cases each (a second scan): 22 cases.
std::vector<std::string> chaos_like_groups() {
  std::vector<std::string> groups;
  for (int p = 0; p < 20; ++p) {
    std::string g = std::string("p") + (p < 10 ? "0" : "") + std::to_string(p);
    groups.push_back(g);
    if (p == 3 || p == 11) groups.push_back(g);
  }
  return groups;
}

TEST(SplitFolds, NoQueryPatientIsEverInTheTrainingSetOfItsFold) {
  const auto groups = chaos_like_groups();
  const std::vector<bool> all(groups.size(), true);
  for (uint64_t seed : {0, 1, 7}) {
    auto folds = split_folds(groups, all, all, 2, seed);
    ASSERT_EQ(folds.size(), 2u);
    std::multiset<size_t> predicted;
    for (const auto& fold : folds) {
      std::set<std::string> query_patients;
      for (size_t q : fold.query_cases) query_patients.insert(groups[q]), predicted.insert(q);
      for (size_t t : fold.train_cases) EXPECT_EQ(query_patients.count(groups[t]), 0u) << groups[t];
      // Everyone else is trained on: the two sets cover every case.
      EXPECT_EQ(fold.train_cases.size() + fold.query_cases.size(), groups.size());
      EXPECT_EQ(query_patients.size(), 10u);  // 20 patients dealt evenly
    }
    // Every case is predicted exactly once.
    ASSERT_EQ(predicted.size(), groups.size());
    for (size_t i = 0; i < groups.size(); ++i) EXPECT_EQ(predicted.count(i), 1u);
  }
}

TEST(SplitFolds, IsAPureFunctionOfTheSeed) {
  const auto groups = chaos_like_groups();
  const std::vector<bool> all(groups.size(), true);
  EXPECT_EQ(split_folds(groups, all, all, 2, 5)[0].query_cases,
            split_folds(groups, all, all, 2, 5)[0].query_cases);
  EXPECT_NE(split_folds(groups, all, all, 2, 5)[0].query_cases,
            split_folds(groups, all, all, 2, 6)[0].query_cases);
}

TEST(SplitFolds, DisjointSupportAndQueriesGiveOneModelOnTheWholeSupportPool) {
  // BTCV-like: train split = support, test split = queries, no patient in both.
  const std::vector<std::string> groups{"a", "b", "c", "d", "e"};
  const std::vector<bool> query{false, false, false, true, true},
      support{true, true, true, false, false};
  auto folds = split_folds(groups, query, support, 2, 0);
  ASSERT_EQ(folds.size(), 1u);
  EXPECT_EQ(folds[0].train_cases, (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(folds[0].query_cases, (std::vector<size_t>{3, 4}));
}

TEST(SplitFolds, RefusesOneFoldWhenQueriesAreSupportPatients) {
  const std::vector<std::string> groups{"a", "b", "c"};
  const std::vector<bool> all(3, true);
  EXPECT_THROW(split_folds(groups, all, all, 1, 0), UsageError);
  EXPECT_THROW(split_folds(groups, all, all, 4, 0), UsageError);
  EXPECT_THROW(split_folds(groups, all, {true, true}, 2, 0), UsageError);
}

// Synthetic two-task planes: a bright square (task 0) and a dimmer disc (task 1) at random places
// on a noisy background. images [N, 1, 32, 32], targets [N, 2, 32, 32] uint8.
std::pair<torch::Tensor, torch::Tensor> shapes_task(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto images = 0.1 + 0.05 * torch::rand({n, 1, 32, 32});
  auto targets = torch::zeros({n, 2, 32, 32}, torch::kUInt8);
  auto yy = torch::arange(32).view({32, 1}), xx = torch::arange(32).view({1, 32});
  for (int64_t i = 0; i < n; ++i) {
    auto pos = torch::randint(4, 20, {4});
    const int64_t sy = pos[0].item<int64_t>(), sx = pos[1].item<int64_t>();
    const int64_t cy = 31 - pos[2].item<int64_t>(), cx = 31 - pos[3].item<int64_t>();
    auto square = (yy >= sy) & (yy < sy + 8) & (xx >= sx) & (xx < sx + 8);
    auto disc = ((yy - cy) * (yy - cy) + (xx - cx) * (xx - cx) <= 16) & ~square;
    images[i][0].masked_fill_(square, 0.9);
    images[i][0].masked_fill_(disc, 0.5);
    targets[i][0] = square.to(torch::kUInt8);
    targets[i][1] = disc.to(torch::kUInt8);
  }
  return {images, targets};
}

double dice_of(const torch::Tensor& probability, const torch::Tensor& target) {
  auto p = probability > 0.5, t = target != 0;
  return 2.0 * (p & t).sum().item<double>() / (p.sum().item<double>() + t.sum().item<double>());
}

UNetBaselineOptions tiny_options() {
  UNetBaselineOptions o;
  o.steps = 60;
  o.batch_size = 8;
  o.learning_rate = 1e-2;
  o.base_features = 8;
  o.levels = 3;
  o.augment = false;
  return o;
}

TEST(TrainUnet, LearnsASyntheticTwoTaskProblemToDiceAboveNinety) {
  auto [images, targets] = shapes_task(24, 3);
  UNetTrainingReport report;
  auto net = train_unet(images, targets, tiny_options(), "test", &report);
  auto probability = predict_unet(net, images, 16);
  ASSERT_EQ(probability.sizes(), targets.sizes());
  EXPECT_GT(dice_of(probability.select(1, 0), targets.select(1, 0)), 0.9);
  EXPECT_GT(dice_of(probability.select(1, 1), targets.select(1, 1)), 0.9);
  EXPECT_EQ(report.steps, 60);
  EXPECT_EQ(report.planes, 24);
  EXPECT_GT(report.seconds, 0);
  // And it generalises to unseen planes of the same task.
  auto [test_images, test_targets] = shapes_task(8, 4);
  EXPECT_GT(dice_of(predict_unet(net, test_images).select(1, 0), test_targets.select(1, 0)), 0.8);
}

TEST(TrainUnet, SameSeedSameWeightsOtherFoldOtherWeights) {
  auto [images, targets] = shapes_task(8, 5);
  auto o = tiny_options();
  o.steps = 3;
  o.augment = true;
  auto a = train_unet(images, targets, o, "fold0"), b = train_unet(images, targets, o, "fold0");
  auto c = train_unet(images, targets, o, "fold1");
  auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool all_equal = true, any_different = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    all_equal &= torch::equal(pa[i], pb[i]);
    any_different |= !torch::equal(pa[i], pc[i]);
  }
  EXPECT_TRUE(all_equal);
  EXPECT_TRUE(any_different);
}

TEST(TrainUnet, RejectsMismatchedShapesAndEmptyInput) {
  auto o = tiny_options();
  EXPECT_THROW(train_unet(torch::rand({4, 1, 32, 32}), torch::zeros({3, 2, 32, 32}), o, "x"),
               ShapeError);
  EXPECT_THROW(train_unet(torch::rand({0, 1, 32, 32}), torch::zeros({0, 2, 32, 32}), o, "x"),
               DataError);
}

TEST(Protocol, UnetIsScoredOncePerQueryByAModelThatNeverSawThatPatient) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  // Three 2D "patients" (ood dataset: every case is a query and a support patient).
  fs::path root = fs::temp_directory_path() / ("segicl_unet_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<testing::ToyCase> cases;
  for (int i = 0; i < 3; ++i) cases.push_back(testing::square_case(40, 8, 10 + i, 28 - i, 30));
  testing::write_toy_dataset(root, "toy", "square", cases, "p");
  auto corpus = data::Corpus::open(root.string());
  ProtocolOptions o;
  o.dataset = "toy";
  o.num_examples = {1, 2};
  o.draws = 2;
  o.methods = {"atlas", "unet"};
  o.unet.steps = 20;
  o.unet.batch_size = 2;
  o.unet.learning_rate = 2e-2;
  o.unet.base_features = 4;
  o.unet.levels = 3;
  o.unet.augment = false;
  auto result = run_protocol(corpus, nullptr, o);
  int unet_rows = 0;
  for (const auto& row : result.scores) {
    if (row.method != "unet") continue;
    ++unet_rows;
    EXPECT_EQ(row.num_examples, kSupervisedExamples);
    EXPECT_EQ(row.draw, 0);
    EXPECT_GT(row.dice, 0.9) << row.case_id;  // the squares differ by a pixel: easy to learn
  }
  EXPECT_EQ(unet_rows, 3);
  const auto& folds = result.options.at("unet").at("folds");
  ASSERT_EQ(folds.size(), 2u);
  for (const auto& fold : folds)
    for (const auto& q : fold["query_cases"])
      for (const auto& t : fold["train_cases"]) EXPECT_NE(q, t);
  auto md = write_report(result, (root / "report").string());
  EXPECT_NE(md.find("| supervised U-Net (2-fold) |"), std::string::npos) << md;
  EXPECT_NE(md.find("atlas ICL-1"), std::string::npos);
  fs::remove_all(root);
}

}  // namespace
}  // namespace segicl::eval
