// Exemplar memory: instruction words, which tasks an instruction names (most specific wins), which
// slices a memory keeps, seeded recall spread over patients, similarity-ranked recall, and the
// files it refuses.
#include "segicl/data/exemplar_memory.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "segicl/core/error.h"

namespace segicl::data {
namespace fs = std::filesystem;

namespace {

// 4 patients x 8 slices at 32^2. Label 1 "liver" on slices 1..5, 2 "left kidney" on 2..3, 3
// "kidney" on 4..6; each slice's liver is a square whose size grows with the slice index, so a
// slice is recognisable from its mask.
Dataset toy_dataset(Role role = Role::kTrain) {
  Dataset d;
  d.name = "toy_ct";
  d.modality = "CT";
  d.dims = 3;
  d.role = role;
  d.tasks = {{"toy_ct/liver", "liver", {1}},
             {"toy_ct/left kidney", "left kidney", {2}},
             {"toy_ct/kidney", "kidney", {3}}};
  for (int i = 0; i < 4; ++i)
    d.cases.push_back({"c" + std::to_string(i),
                       "g" + std::to_string(i),
                       "",
                       "",
                       "",
                       {},
                       "",
                       role == Role::kTrain ? Split::kTrain : Split::kTest});
  return d;
}

PreparedVolume toy_volume(int patient) {
  PreparedVolume v;
  v.image = torch::full({1, 8, 32, 32}, 0.1 * (patient + 1));
  v.labels = torch::zeros({8, 32, 32}, torch::kInt32);
  for (int s = 1; s <= 5; ++s) v.labels[s].slice(0, 0, 2 + s).slice(1, 0, 2 + s).fill_(1);
  for (int s = 2; s <= 3; ++s) v.labels[s].slice(0, 20, 26).slice(1, 20, 26).fill_(2);
  for (int s = 4; s <= 6; ++s) v.labels[s].slice(0, 20, 26).slice(1, 2, 8).fill_(3);
  v.through_axis = 2;
  v.dims = 3;
  return v;
}

class Memory : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segicl_memory_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    pack_path_ = (dir_ / "train.pack").string();
    PackOptions options;
    options.preprocess.resolution = 32;
    options.preprocess.empty_slice_fraction = 1.0;
    PackWriter writer(PackPurpose::kTrain, options);
    auto d = toy_dataset();
    for (int i = 0; i < 4; ++i) writer.add_case(d, d.cases[i], toy_volume(i));
    writer.write(pack_path_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::shared_ptr<const ExemplarMemory> build(const MemoryOptions& options) {
    const auto path = (dir_ / "m.memory").string();
    ExemplarMemory::build(*Pack::open(pack_path_), path, options);
    return ExemplarMemory::open(path);
  }
  fs::path dir_;
  std::string pack_path_;
};

int64_t liver_pixels(const torch::Tensor& mask) { return mask.sum().item<int64_t>(); }

}  // namespace

TEST(ContentWords, LowerCasesDropsFillerAndPluralS) {
  EXPECT_EQ(content_words("Segment the LEFT kidneys, please."),
            (std::vector<std::string>{"left", "kidney"}));
  EXPECT_EQ(content_words("outline all glands"), (std::vector<std::string>{"gland"}));
  EXPECT_EQ(content_words("grass"), (std::vector<std::string>{"grass"}));  // "ss" is not a plural
  EXPECT_TRUE(content_words("segment the").empty());
}

TEST(MemoryPathFor, SitsBesideTheCheckpointWithoutPtOrPartSuffix) {
  EXPECT_EQ(memory_path_for("models/segicl-crossconv.pt"), "models/segicl-crossconv.memory");
  EXPECT_EQ(memory_path_for("runs/big.pt.01"), "runs/big.memory");
  EXPECT_EQ(memory_path_for("model"), "model.memory");
  // Choosing one: the own file only when it exists; "none" none; anything else as given.
  EXPECT_EQ(resolve_memory_path("/no/such/dir/m.pt", ""), "");
  EXPECT_EQ(resolve_memory_path("/no/such/dir/m.pt", "auto"), "");
  EXPECT_EQ(resolve_memory_path("/no/such/dir/m.pt", "none"), "");
  EXPECT_EQ(resolve_memory_path("/no/such/dir/m.pt", "other.memory"), "other.memory");
}

TEST_F(Memory, KeepsTheMiddleSliceOfTheFirstGroupsOfEveryTask) {
  MemoryOptions options;
  options.groups_per_task = 2;
  options.slices_per_group = 1;
  auto memory = build(options);
  // Liver 1..5 -> 3, left kidney 2..3 -> 3, kidney 4..6 -> 5, for patients g0 and g1: slices
  // {3, 5} of two patients.
  EXPECT_EQ(memory->pack().num_slices(), 4);
  std::set<int32_t> groups(memory->pack().slice_group().begin(),
                           memory->pack().slice_group().end());
  EXPECT_EQ(groups, (std::set<int32_t>{0, 1}));
  EXPECT_EQ(memory->structures(), (std::vector<std::string>{"kidney", "left kidney", "liver"}));
  // Slice 3's liver square is 5x5.
  auto liver = memory->recall("liver", 1, 0);
  ASSERT_EQ(liver.count(), 1);
  EXPECT_TRUE(liver_pixels(liver.masks[0]) == 25 || liver_pixels(liver.masks[0]) == 49);
}

TEST_F(Memory, TheMostSpecificStructureTheInstructionNamesWins) {
  auto memory = build({});
  EXPECT_EQ(memory->match("segment the left kidney"),
            (std::vector<std::string>{"toy_ct/left kidney"}));
  EXPECT_EQ(memory->match("Segment the kidneys"), (std::vector<std::string>{"toy_ct/kidney"}));
  EXPECT_EQ(memory->match("liver please"), (std::vector<std::string>{"toy_ct/liver"}));
  EXPECT_TRUE(memory->match("segment the optic disc").empty());
  EXPECT_TRUE(memory->match("segment the left lung").empty());  // "left" alone names nothing
  EXPECT_TRUE(memory->match("").empty());
}

TEST_F(Memory, RecallSpreadsOverPatientsAndIsAPureFunctionOfTheSeed) {
  MemoryOptions options;
  options.slices_per_group = 3;
  auto memory = build(options);
  auto a = memory->recall("segment the liver", 4, 7);
  ASSERT_EQ(a.count(), 4);
  EXPECT_EQ(a.tasks, (std::vector<std::string>{"toy_ct/liver"}));
  EXPECT_EQ(a.images.sizes(), (std::vector<int64_t>{4, 1, 32, 32}));
  EXPECT_EQ(a.masks.sizes(), (std::vector<int64_t>{4, 1, 32, 32}));
  // One slice per patient before any second slice: four patients, four image intensities.
  std::set<int> intensities;
  for (int i = 0; i < 4; ++i)
    intensities.insert(static_cast<int>(std::lround(a.images[i].max().item<double>() * 10)));
  EXPECT_EQ(intensities.size(), 4u);
  // Masks are the task's label only, as {0, 1}.
  EXPECT_TRUE(torch::equal(a.masks, (a.masks > 0.5).to(torch::kFloat32)));
  auto b = memory->recall("segment the liver", 4, 7);
  EXPECT_TRUE(torch::equal(a.images, b.images) && torch::equal(a.masks, b.masks));
  bool differs = false;
  for (uint64_t seed = 8; seed < 40 && !differs; ++seed) {
    auto c = memory->recall("segment the liver", 2, seed);
    differs = !torch::equal(c.masks, memory->recall("segment the liver", 2, 7).masks);
  }
  EXPECT_TRUE(differs) << "recall ignores its seed";
}

TEST_F(Memory, RecallStopsAtWhatTheMemoryHoldsAndGivesNothingForAnUnknownStructure) {
  MemoryOptions options;
  options.groups_per_task = 2;
  options.slices_per_group = 1;
  auto memory = build(options);
  // Left kidney: its middle slice 3 of two patients (slice 3 is also a liver slice, never a
  // left-kidney-free one).
  auto all = memory->recall("left kidney", 50, 0);
  EXPECT_EQ(all.count(), 2);
  auto none = memory->recall("segment the optic disc", 3, 0);
  EXPECT_EQ(none.count(), 0);
  EXPECT_FALSE(none.images.defined());
  EXPECT_TRUE(none.tasks.empty());
  EXPECT_EQ(memory->recall("liver", 0, 0).count(), 0);
}

TEST_F(Memory, SimilarRecallPicksThePatientsWhoseLayoutIsClosestToTheQuery) {
  // Patient p's images: a bright block 8 columns wide starting at column 4 + 6p (same brightness
  // otherwise for all), so the layout alone tells the patients apart.
  PackOptions options;
  options.preprocess.resolution = 32;
  options.preprocess.empty_slice_fraction = 1.0;
  PackWriter writer(PackPurpose::kTrain, options);
  auto d = toy_dataset();
  auto block = [](int p) {
    auto image = torch::full({1, 32, 32}, 0.2);
    image.slice(2, 4 + 6 * p, 12 + 6 * p).fill_(0.9);
    return image;
  };
  for (int p = 0; p < 4; ++p) {
    auto v = toy_volume(p);
    v.image = block(p).unsqueeze(1).expand({1, 8, 32, 32}).clone();
    writer.add_case(d, d.cases[p], v);
  }
  const auto pack_path = (dir_ / "layout.pack").string();
  writer.write(pack_path);
  const auto path = (dir_ / "layout.memory").string();
  MemoryOptions memory_options;
  memory_options.slices_per_group = 3;
  ExemplarMemory::build(*Pack::open(pack_path), path, memory_options);
  auto memory = ExemplarMemory::open(path);
  auto group_of = [&](const torch::Tensor& image) {
    for (int p = 0; p < 4; ++p)
      if (torch::allclose(image, block(p), 0, 0.01)) return p;
    return -1;
  };
  // A query volume of two planes, both patient 2's layout (slightly darker).
  auto query = torch::stack({block(2) * 0.9, block(2) * 0.8});
  auto one = memory->recall_similar("segment the liver", 1, query);
  ASSERT_EQ(one.count(), 1);
  EXPECT_EQ(group_of(one.images[0]), 2);
  EXPECT_EQ(one.tasks, (std::vector<std::string>{"toy_ct/liver"}));
  // One slice per patient, nearest layouts first: 2, then its neighbours 1 and 3, then 0.
  auto all = memory->recall_similar("segment the liver", 4, query);
  ASSERT_EQ(all.count(), 4);
  std::vector<int> order;
  for (int i = 0; i < 4; ++i) order.push_back(group_of(all.images[i]));
  EXPECT_EQ(order[0], 2);
  EXPECT_EQ(std::set<int>(order.begin() + 1, order.begin() + 3), (std::set<int>{1, 3}));
  EXPECT_EQ(order[3], 0);
  EXPECT_TRUE(torch::equal(all.images, memory->recall_similar("segment the liver", 4, query).images));
  // More than the patients: a second slice of each (patient 2's first) before any third; at most
  // every liver slice the memory holds (the kidney tasks' slices show liver too).
  auto six = memory->recall_similar("segment the liver", 6, query);
  ASSERT_EQ(six.count(), 6);
  EXPECT_EQ(group_of(six.images[4]), 2);
  size_t liver_slices = 0;
  for (const auto& task : memory->pack().tasks())
    if (task.structure == "liver") liver_slices = task.positives.size();
  EXPECT_GT(liver_slices, 4u);
  EXPECT_EQ(memory->recall_similar("segment the liver", 50, query).count(), static_cast<int64_t>(liver_slices));
  EXPECT_EQ(memory->recall_similar("segment the optic disc", 3, query).count(), 0);
  EXPECT_THROW(memory->recall_similar("liver", 1, torch::zeros({1, 1, 16, 16})), ShapeError);
  EXPECT_THROW(memory->recall_similar("liver", 1, torch::zeros({1, 32, 32})), ShapeError);
}

TEST_F(Memory, SimilarRecallTakesEveryMatchedDatasetInTurn) {
  // Two datasets hold "liver": toy_ct's images are all like the query, toy_mr's all unlike it.
  // Two pairs must come one from each, not both from the closer dataset.
  PackOptions options;
  options.preprocess.resolution = 32;
  options.preprocess.empty_slice_fraction = 1.0;
  PackWriter writer(PackPurpose::kTrain, options);
  auto like = torch::full({1, 32, 32}, 0.2);
  like.slice(2, 0, 10).fill_(0.9);
  auto unlike = torch::full({1, 32, 32}, 0.2);
  unlike.slice(1, 20, 32).fill_(0.9);
  for (const std::string name : {"toy_ct", "toy_mr"}) {
    auto d = toy_dataset();
    d.name = name;
    d.tasks = {{name + "/liver", "liver", {1}}};
    for (int p = 0; p < 3; ++p) {
      auto v = toy_volume(p);
      v.image = (name == "toy_ct" ? like : unlike).unsqueeze(1).expand({1, 8, 32, 32}).clone();
      writer.add_case(d, d.cases[p], v);
    }
  }
  const auto pack_path = (dir_ / "two.pack").string();
  writer.write(pack_path);
  const auto path = (dir_ / "two.memory").string();
  ExemplarMemory::build(*Pack::open(pack_path), path);
  auto memory = ExemplarMemory::open(path);
  auto two = memory->recall_similar("segment the liver", 2, like.unsqueeze(0));
  ASSERT_EQ(two.count(), 2);
  EXPECT_TRUE(torch::allclose(two.images[0], like, 0, 0.01)) << "the closer dataset goes first";
  EXPECT_TRUE(torch::allclose(two.images[1], unlike, 0, 0.01)) << "then the other dataset";
  EXPECT_EQ(two.tasks, (std::vector<std::string>{"toy_ct/liver", "toy_mr/liver"}));
}

TEST_F(Memory, OnlyATrainPackIsAMemory) {
  PackOptions options;
  options.preprocess.resolution = 32;
  PackWriter writer(PackPurpose::kEval, options);
  auto d = toy_dataset(Role::kOod);
  writer.add_case(d, d.cases[0], toy_volume(0));
  const auto eval_path = (dir_ / "eval.pack").string();
  writer.write(eval_path);
  try {
    ExemplarMemory::open(eval_path);
    FAIL() << "an eval pack was accepted as a memory";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.file(), eval_path);
  }
  EXPECT_THROW(ExemplarMemory::build(*Pack::open(eval_path), (dir_ / "x.memory").string()),
               UsageError);
  EXPECT_THROW(ExemplarMemory::open((dir_ / "missing.memory").string()), IoError);
}

TEST_F(Memory, WriteSubsetKeepsTheChosenSlicesInOrderAndRefusesBadIndices) {
  auto pack = Pack::open(pack_path_);
  const auto path = (dir_ / "subset.pack").string();
  PackWriter::write_subset(*pack, {9, 2}, path);
  auto subset = Pack::open(path);
  ASSERT_EQ(subset->num_slices(), 2);
  EXPECT_TRUE(torch::equal(subset->images()[0], pack->images()[9]));
  EXPECT_TRUE(torch::equal(subset->labels()[1], pack->labels()[2]));
  EXPECT_EQ(subset->slice_group()[0], pack->slice_group()[9]);
  EXPECT_EQ(subset->tasks().size(), pack->tasks().size());
  EXPECT_THROW(PackWriter::write_subset(*pack, {pack->num_slices()}, path), UsageError);
  EXPECT_THROW(PackWriter::write_subset(*pack, {}, path), DataError);
}

}  // namespace segicl::data
