#include "segicl/eval/protocol.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/data/corpus.h"
#include "segicl/io/volume.h"
#include "segicl/models/config.h"
#include "toy_corpus.h"

namespace segicl::eval {
namespace fs = std::filesystem;

TEST(Summarize, AveragesCasesPerDrawThenDrawsAndTasks) {
  ProtocolResult r;
  // Task A, x=1: draw 0 cases {0.2, 0.4} -> 0.3; draw 1 cases {0.5, 0.7} -> 0.6; mean 0.45.
  for (auto [draw, dice] : std::vector<std::pair<int, double>>{{0, 0.2}, {0, 0.4}, {1, 0.5}, {1, 0.7}})
    r.scores.push_back({"d/A", "segicl", "c", 1, draw, dice, 0, false});
  // Task B, x=1: draws 0.9 and 0.7 -> 0.8.
  r.scores.push_back({"d/B", "segicl", "c", 1, 0, 0.9, 0, false});
  r.scores.push_back({"d/B", "segicl", "c", 1, 1, 0.7, 0, false});
  auto s = summarize(r);
  ASSERT_EQ(s["per_task"].size(), 2u);
  EXPECT_NEAR(s["per_task"][0]["dice_mean"].get<double>(), 0.45, 1e-12);
  EXPECT_NEAR(s["per_task"][0]["dice_std_over_draws"].get<double>(), std::sqrt(0.045), 1e-12);
  // Mean over tasks per draw: (0.3 + 0.9)/2 = 0.6 and (0.6 + 0.7)/2 = 0.65 -> 0.625.
  EXPECT_NEAR(s["mean_over_tasks"][0]["dice_mean"].get<double>(), 0.625, 1e-12);
}

// `patients` 2D "patients" (PNG, 40x40) with the same bright square, dataset "toy" under `root`:
// ood (no README, every case a query), or with `train_role` a train-role dataset (patients split
// train/val/test by the corpus' seeded rule).
data::Corpus write_square_corpus(const fs::path& root, int patients = 3, bool train_role = false) {
  fs::remove_all(root);
  std::vector<testing::ToyCase> cases;
  for (int i = 0; i < patients; ++i) cases.push_back(testing::square_case(40, 8, 10, 28, 30));
  testing::write_toy_dataset(root, "toy", "square", cases, "p");
  if (train_role)
    std::ofstream(root / "README.md") << "| dataset | dims | modality | region | cases | tasks | role | split |\n"
                                      << "|---|---|---|---|---|---|---|---|\n"
                                      << "| `toy` | 2D | x | x | 3 | square | train | by group |\n";
  return data::Corpus::open(root.string());  // no README: the dataset is ood, all cases are queries
}

// Options scoring only the model (rows labelled "m", no HD95) on write_square_corpus's "toy".
ProtocolOptions model_rows_on_toy(std::vector<int> num_examples) {
  ProtocolOptions o;
  o.dataset = "toy";
  o.num_examples = std::move(num_examples);
  o.draws = 1;
  o.methods = {"segicl"};
  o.model_label = "m";
  o.hd95 = false;
  return o;
}

TEST(Protocol, AtlasOfIdenticalPatientsIsPerfectOnTheirSlices) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  // The atlas of any examples is the square itself.
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_" + std::to_string(::getpid()));
  auto corpus = write_square_corpus(root);
  ProtocolOptions o;
  o.dataset = "toy";
  o.num_examples = {1, 2};
  o.draws = 2;
  o.methods = {"atlas"};
  auto result = run_protocol(corpus, nullptr, o);
  EXPECT_EQ(result.scores.size(), 3u * 2 * 2);
  for (const auto& row : result.scores) EXPECT_NEAR(row.dice, 1.0, 1e-9) << row.case_id;
  auto md = write_report(result, (root / "report").string());
  EXPECT_NE(md.find("atlas ICL-1"), std::string::npos);
  EXPECT_TRUE(fs::exists(root / "report" / "metrics.json"));
  EXPECT_TRUE(fs::exists(root / "report" / "DONE"));
  fs::remove_all(root);
}

TEST(Protocol, QuerySplitValQueriesTheValPatientsOfATrainDatasetAndNeverDrawsThem) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_split_" + std::to_string(::getpid()));
  auto corpus = write_square_corpus(root, 24, true);
  std::set<std::string> by_split[3];  // test, val, train
  for (const auto& c : corpus.find("toy")->cases)
    by_split[c.split == data::Split::kTest ? 0 : c.split == data::Split::kVal ? 1 : 2].insert(c.id);
  ASSERT_FALSE(by_split[0].empty() || by_split[1].empty())
      << "the seeded split gave no test or no val patient: use more patients";
  ProtocolOptions o;
  o.dataset = "toy";
  o.num_examples = {1};
  o.draws = 1;
  o.methods = {"atlas"};
  auto queried = [&](const std::string& split) {
    o.query_split = split;
    std::set<std::string> ids;
    for (const auto& row : run_protocol(corpus, nullptr, o).scores) ids.insert(row.case_id);
    return ids;
  };
  EXPECT_EQ(queried("test"), by_split[0]);
  EXPECT_EQ(queried("val"), by_split[1]);
  o.query_split = "train";
  EXPECT_THROW(run_protocol(corpus, nullptr, o), UsageError) << "train patients are the support pool";
  fs::remove_all(root);
}

TEST(Protocol, PresenceRowsSitBesideTheRawOnesAndOnlyEmptyWholePlanes) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_presence_" + std::to_string(::getpid()));
  auto corpus = write_square_corpus(root);
  torch::manual_seed(5);
  models::SegICLModel model(models::load_preset("crossconv-tiny"));
  auto o = model_rows_on_toy({0, 1});
  o.presence_fractions = {0.5, 1.0};
  auto result = run_protocol(corpus, model.get(), o);
  // Per case and x: the raw row, then one per fraction. A 2D query is one plane, the best plane
  // itself, so no fraction empties it; at x = 0 there is no context to check against.
  ASSERT_EQ(result.scores.size(), 3u * 2 * 3);
  for (size_t i = 0; i < result.scores.size(); i += 3) {
    EXPECT_EQ(result.scores[i].method, "m");
    EXPECT_EQ(result.scores[i + 1].method, "m+presence0.5");
    EXPECT_EQ(result.scores[i + 2].method, "m+presence1");
    EXPECT_DOUBLE_EQ(result.scores[i + 1].dice, result.scores[i].dice) << result.scores[i].case_id;
    EXPECT_DOUBLE_EQ(result.scores[i + 2].dice, result.scores[i].dice) << result.scores[i].case_id;
  }
  o.presence_fractions = {1.5};
  EXPECT_THROW(run_protocol(corpus, model.get(), o), UsageError) << "a fraction outside (0, 1]";
  fs::remove_all(root);
}

TEST(Protocol, PostProcessedRowsSitBesideTheRawOnesOfTheSamePrediction) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_post_" + std::to_string(::getpid()));
  auto corpus = write_square_corpus(root);
  torch::manual_seed(5);
  models::SegICLModel model(models::load_preset("crossconv-tiny"));
  auto o = model_rows_on_toy({1});
  auto raw = run_protocol(corpus, model.get(), o);
  o.postprocess = {"largest-cc", "fill-holes"};
  auto post = run_protocol(corpus, model.get(), o);
  ASSERT_EQ(raw.scores.size(), 3u);
  ASSERT_EQ(post.scores.size(), 6u);
  for (size_t i = 0; i < raw.scores.size(); ++i) {
    EXPECT_EQ(post.scores[2 * i].method, "m");
    EXPECT_DOUBLE_EQ(post.scores[2 * i].dice, raw.scores[i].dice) << "the raw rows do not change";
    EXPECT_EQ(post.scores[2 * i + 1].method, "m+largest-cc+fill-holes");
    EXPECT_EQ(post.scores[2 * i + 1].case_id, raw.scores[i].case_id);
  }
  EXPECT_EQ(post.options["postprocess"].size(), 2u);
  o.postprocess = {"largest-cc", "erode"};
  EXPECT_THROW(run_protocol(corpus, model.get(), o), UsageError) << "unknown step, refused before any work";
  fs::remove_all(root);
}

TEST(Protocol, VolumesAreAlsoScoredWithinTheStructuresPlanesAcrossTheSlicingAxis) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  // Three identical 16 x 8 x 16 volumes, 3 mm across y (so the planes are cut across y, the file
  // tensor's dimension 1); an 8 x 8 square on planes y = 2, 3, 4 only. The atlas of any example
  // puts the square on all 8 planes: whole-volume Dice 2·3 / (8 + 3), but exact within the 3
  // planes holding it (cutting across z instead would count every plane, 6 / 11 again).
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_3d_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<testing::ToyCase> cases(3);
  for (auto& c : cases) {
    c.image.dims = c.labels.dims = 3;
    c.image.size = c.labels.size = {16, 8, 16};
    c.image.geometry.spacing = {1.0, 3.0, 1.0};
    c.labels.geometry = c.image.geometry;
    c.image.voxels.assign(16 * 8 * 16, 10.0f);
    c.labels.labels.assign(c.image.voxels.size(), 0);
    for (int z = 4; z < 12; ++z)
      for (int y = 2; y < 5; ++y)
        for (int x = 4; x < 12; ++x) {
          const size_t at = (static_cast<size_t>(z) * 8 + y) * 16 + x;
          c.labels.labels[at] = 1, c.image.voxels[at] = 200.0f;
        }
  }
  testing::write_toy_dataset(root, "vol", "slab", cases, "v", ".nii.gz");
  auto corpus = data::Corpus::open(root.string());
  torch::manual_seed(3);
  models::SegICLModel model(models::load_preset("crossconv-tiny"));
  ProtocolOptions o;
  o.dataset = "vol";
  o.num_examples = {0, 1};
  o.draws = 2;
  o.methods = {"segicl", "atlas"};
  o.hd95 = false;
  auto result = run_protocol(corpus, model.get(), o);
  ASSERT_EQ(result.scores.size(), 3u * 2 + 3u * 2 * 2) << "x = 0: the model only; x = 1: model and atlas";
  std::map<std::string, const CaseScore*> first_draw_text_only;
  for (const auto& row : result.scores) {
    if (row.method == "atlas") {
      EXPECT_NEAR(row.dice, 6.0 / 11.0, 1e-9) << row.case_id;
      EXPECT_NEAR(row.dice_in_extent, 1.0, 1e-9) << row.case_id;
      EXPECT_NEAR(row.mean_slice_dice, 1.0, 1e-9) << row.case_id;
    } else if (row.num_examples == 0 && row.draw == 0) {
      first_draw_text_only[row.case_id] = &row;
    } else if (row.num_examples == 0) {
      // Without examples every draw is draw 0's prediction.
      const CaseScore* first = first_draw_text_only.at(row.case_id);
      EXPECT_DOUBLE_EQ(row.dice, first->dice);
      EXPECT_DOUBLE_EQ(row.dice_in_extent, first->dice_in_extent);
    }
  }
  auto md = write_report(result, (root / "report").string());
  EXPECT_NE(md.find("Within the structure's slice range"), std::string::npos);
  EXPECT_NE(md.find("Mean 2D Dice over the planes holding the structure"), std::string::npos);
  auto metrics = config::Json::parse(std::ifstream(root / "report" / "metrics.json"));
  EXPECT_EQ(metrics["options"]["query_dims"], 3);
  EXPECT_TRUE(metrics.contains("summary_in_extent"));
  for (const auto& m : metrics["summary_in_extent"]["mean_over_tasks"])
    if (m["method"] == "atlas") EXPECT_NEAR(m["dice_mean"].get<double>(), 1.0, 1e-9);
  fs::remove_all(root);
}

TEST(Protocol, CasesWithTheirOwnTaskAreOnlyQueriedAndDrawnWithinIt) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  // medscribble's shape: every case names its own task, all use label 1. Task A's square is top
  // left, task B's bottom right: an atlas drawn across tasks would score 0 on the other's cases.
  fs::path root = fs::temp_directory_path() / ("segicl_protocol_tasks_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<testing::ToyCase> cases;
  for (int i = 0; i < 4; ++i) {
    const bool task_a = i < 2;
    const int offset = task_a ? 2 : 22;
    cases.push_back(testing::square_case(40, offset, offset, offset + 16, offset + 16, task_a ? "A/square" : "B/square"));
  }
  testing::write_toy_dataset(root, "mix", "square", cases, "c");
  auto corpus = data::Corpus::open(root.string());
  ProtocolOptions o;
  o.dataset = "mix";
  o.num_examples = {1};
  o.draws = 3;
  o.methods = {"atlas"};
  auto result = run_protocol(corpus, nullptr, o);
  ASSERT_EQ(result.scores.size(), 4u * 3) << "each case is a query of its own task only";
  for (const auto& row : result.scores) {
    EXPECT_NEAR(row.dice, 1.0, 1e-9) << row.task << " " << row.case_id;
    EXPECT_EQ(row.task, (row.case_id == "c0" || row.case_id == "c1") ? "mix/A/square" : "mix/B/square");
  }
  fs::remove_all(root);
}

}  // namespace segicl::eval
