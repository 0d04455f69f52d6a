#include "segicl/data/corpus.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "segicl/core/error.h"
#include "test_corpus.h"

namespace segicl::data {

TEST(Corpus, ReadsRolesFromTheReadmeTable) {
  auto root = testing::make_test_corpus("roles");
  auto corpus = Corpus::open(root.string());
  ASSERT_EQ(corpus.datasets().size(), 3u);
  EXPECT_EQ(corpus.find("train_ct")->role, Role::kTrain);
  EXPECT_EQ(corpus.find("ood_mr")->role, Role::kOod);
  EXPECT_EQ(corpus.find("suite")->role, Role::kEval);
  std::filesystem::remove_all(root);
}

TEST(Corpus, EachLabelIsABinaryTaskAndPerCaseTasksOverride) {
  auto root = testing::make_test_corpus("tasks");
  auto corpus = Corpus::open(root.string());
  ASSERT_TRUE(corpus.find_task("train_ct/liver"));
  ASSERT_TRUE(corpus.find_task("train_ct/spleen"));
  auto heart = corpus.find_task("suite/X/heart");
  ASSERT_TRUE(heart);
  EXPECT_EQ(heart->second.structure, "heart");
  EXPECT_EQ(corpus.find("suite")->tasks.size(), 2u);
  EXPECT_FALSE(corpus.find_task("train_ct/kidney"));
  std::filesystem::remove_all(root);
}

TEST(Corpus, FixedTestGroupsAndSeededSplitsNeverStraddle) {
  auto root = testing::make_test_corpus("splits");
  auto a = Corpus::open(root.string(), {7});
  auto b = Corpus::open(root.string(), {7});
  const auto& cases = a.find("train_ct")->cases;
  EXPECT_EQ(cases[0].split, Split::kTest);  // README: test = 00
  int val = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(cases[i].split, b.find("train_ct")->cases[i].split) << "split must be a pure function of the seed";
    if (i > 0) EXPECT_NE(cases[i].split, Split::kTest);
    val += cases[i].split == Split::kVal;
  }
  EXPECT_LT(val, 10);
  std::filesystem::remove_all(root);
}

TEST(TrainingView, NeverYieldsOodOrEvalDatasets) {
  auto root = testing::make_test_corpus("ood");
  auto corpus = Corpus::open(root.string());
  for (Split split : {Split::kTrain, Split::kVal}) {
    TrainingView view(corpus, split);
    for (const auto& item : view.cases()) {
      EXPECT_EQ(item.dataset->role, Role::kTrain);
      EXPECT_EQ(item.item->split, split);
    }
  }
  EXPECT_GT(TrainingView(corpus, Split::kTrain).cases().size(), 10u);
  EXPECT_THROW(TrainingView(corpus, Split::kTest), UsageError);
  std::filesystem::remove_all(root);
}

TEST(Corpus, UnknownDatasetDefaultsToOod) {
  auto root = testing::make_test_corpus("unknown");
  std::filesystem::create_directories(root / "mystery");
  std::ofstream(root / "mystery" / "dataset.json") << R"({"name": "mystery", "dims": 2, "labels": {"1": "x"}, "cases": []})";
  EXPECT_EQ(Corpus::open(root.string()).find("mystery")->role, Role::kOod);
  std::filesystem::remove_all(root);
}

TEST(Corpus, MalformedDatasetJsonNamesTheFile) {
  auto root = testing::make_test_corpus("bad");
  std::ofstream(root / "ood_mr" / "dataset.json") << "{not json";
  try {
    Corpus::open(root.string());
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(e.file().find("ood_mr/dataset.json"), std::string::npos);
  }
  std::filesystem::remove_all(root);
}

TEST(Corpus, RealCorpusKeepsOodDatasetsOutOfTraining) {
  std::string root = std::string(SEGICL_SOURCE_DIR) + "/../shared/data";
  if (!std::filesystem::exists(root + "/README.md")) GTEST_SKIP() << "no shared corpus";
  auto corpus = Corpus::open(root);
  std::set<std::string> ood = {"chaos_mr_t2", "drive_fundus", "chase_fundus", "drishti_fundus", "drions_fundus", "medscribble"};
  for (const auto& name : ood) ASSERT_NE(corpus.find(name)->role, Role::kTrain) << name;
  // Named: a range-for over a temporary's cases() read freed stack (ASan stack-use-after-scope).
  const TrainingView view(corpus, Split::kTrain);
  for (const auto& item : view.cases()) EXPECT_FALSE(ood.count(item.dataset->name)) << item.dataset->name;
  for (const auto& c : corpus.find("btcv_ct")->cases)
    if (c.group == "0001" || c.group == "0038") EXPECT_EQ(c.split, Split::kTest);
}

}  // namespace segicl::data
