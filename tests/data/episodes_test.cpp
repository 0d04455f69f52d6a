#include "segicl/data/episodes.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "segicl/core/error.h"

namespace segicl::data {
namespace fs = std::filesystem;

namespace {

// A pack of 4 patients x 5 slices with a square "liver" that moves with the slice; with
// `spleen_slices`, slices 0 and 1 hold a "spleen" (label 2) instead, so each task has slices
// without its structure (its negatives).
std::shared_ptr<const Pack> toy_pack(PackPurpose purpose, bool spleen_slices = false) {
  Dataset d;
  d.name = "toy_ct";
  d.modality = "CT";
  d.region = "abdomen";
  d.dims = 3;
  d.role = Role::kTrain;
  d.tasks = {{"toy_ct/liver", "liver", {1}}};
  if (spleen_slices) d.tasks.push_back({"toy_ct/spleen", "spleen", {2}});
  for (int i = 0; i < 4; ++i) d.cases.push_back({"c" + std::to_string(i), "g" + std::to_string(i), "", "", "", {}, "", purpose == PackPurpose::kVal ? Split::kVal : Split::kTrain});
  PackOptions options;
  options.preprocess.resolution = 32;
  PackWriter writer(purpose, options);
  for (int i = 0; i < 4; ++i) {
    PreparedVolume v;
    v.image = torch::full({1, 5, 32, 32}, 0.2);
    v.labels = torch::zeros({5, 32, 32}, torch::kInt32);
    for (int s = 0; s < 5; ++s) {
      v.labels[s].slice(0, 4 + s, 14 + s).slice(1, 8, 20).fill_(spleen_slices && s < 2 ? 2 : 1);
      v.image[0][s].slice(0, 4 + s, 14 + s).slice(1, 8, 20).fill_(0.8);
    }
    writer.add_case(d, d.cases[i], v);
  }
  auto path = (fs::temp_directory_path() / ("segicl_ep_" + std::to_string(::getpid()) + ".pack")).string();
  writer.write(path);
  auto pack = Pack::open(path);
  fs::remove(path);
  return pack;
}

}  // namespace

TEST(EpisodeSampler, BatchShapesAndValidityFollowTheOptions) {
  EpisodeOptions options;
  options.resolution = 32;
  options.min_context = 1;
  options.max_context = 3;
  EpisodeSampler sampler(toy_pack(PackPurpose::kTrain), options, 1);
  auto batch = sampler.sample(6);
  EXPECT_EQ(batch.query_images.sizes(), (std::vector<int64_t>{6, 1, 32, 32}));
  EXPECT_EQ(batch.context_masks.sizes(), (std::vector<int64_t>{6, 3, 1, 32, 32}));
  EXPECT_EQ(batch.context_valid.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_TRUE((batch.context_valid.sum(1) >= 1).all().item<bool>());
  EXPECT_EQ(batch.instructions.size(), 6u);
  EXPECT_GE(batch.query_images.min().item<float>(), 0.0f);
  EXPECT_LE(batch.query_images.max().item<float>(), 1.0f);
  auto unique = std::get<0>(torch::_unique(batch.query_masks));
  EXPECT_LE(unique.numel(), 2);
}

TEST(EpisodeSampler, MasksFollowImagesWithoutAugmentation) {
  EpisodeOptions options;
  options.resolution = 32;
  options.synthetic_fraction = 0;
  options.augment = false;
  options.min_context = 2;
  options.max_context = 2;
  EpisodeSampler sampler(toy_pack(PackPurpose::kTrain), options, 3);
  auto batch = sampler.sample(4);
  auto bright = (batch.query_images > 0.5).to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(bright, batch.query_masks));
  EXPECT_TRUE(torch::equal((batch.context_images > 0.5).to(torch::kFloat32), batch.context_masks));
  for (const auto& text : batch.instructions)
    if (!text.empty()) EXPECT_NE(text.find("liver"), std::string::npos) << text;
}

TEST(EpisodeSampler, EmptyQueryFractionDrawsQueriesWithoutTheStructure) {
  EpisodeOptions options;
  options.resolution = 32;
  options.synthetic_fraction = 0;
  options.augment = false;
  options.min_context = options.max_context = 2;
  auto pack = toy_pack(PackPurpose::kTrain, true);
  auto empty_queries = [&](double fraction) {
    options.empty_query_fraction = fraction;
    EpisodeSampler sampler(pack, options, 5);
    auto batch = sampler.sample(32);
    // Every context pair shows its structure either way; only the query may not.
    EXPECT_TRUE((batch.context_masks.flatten(2).sum(2) > 0).all().item<bool>());
    return (batch.query_masks.flatten(1).sum(1) == 0).sum().item<int64_t>();
  };
  EXPECT_EQ(empty_queries(0.0), 0);
  EXPECT_EQ(empty_queries(1.0), 32) << "every query from the task's negatives";
  const auto some = empty_queries(0.3);
  EXPECT_GT(some, 2);
  EXPECT_LT(some, 20);
}

TEST(EpisodeSampler, SameSeedSameEpisodesAndStateResumesExactly) {
  EpisodeOptions options;
  options.resolution = 32;
  options.max_context = 2;
  auto pack = toy_pack(PackPurpose::kTrain);
  EpisodeSampler a(pack, options, 9), b(pack, options, 9);
  EXPECT_TRUE(torch::equal(a.sample(3).query_images, b.sample(3).query_images));
  auto saved = a.state();
  auto next = a.sample(3);
  EpisodeSampler c(pack, options, 123);
  c.restore(saved);
  EXPECT_TRUE(torch::equal(c.sample(3).context_images, next.context_images));
}

namespace {

// Episodes of both kinds (real with empty queries, synthetic) for the compute_on() tests.
EpisodeOptions placement_options() {
  EpisodeOptions options;
  options.resolution = 32;
  options.max_context = 3;
  options.empty_query_fraction = 0.3;
  return options;
}

}  // namespace

// compute_on() moves where the arithmetic runs, never what is drawn: it takes nothing from the
// sampler's stream, and on the host it leaves every episode as the default sampler draws it.
TEST(EpisodeSampler, ComputeOnTheHostDrawsTheDefaultEpisodes) {
  const auto options = placement_options();
  auto pack = toy_pack(PackPurpose::kTrain, true);
  EpisodeSampler plain(pack, options, 4), placed(pack, options, 4);
  placed.compute_on(torch::kCPU);
  EXPECT_EQ(placed.state(), plain.state());
  auto a = plain.sample(8), b = placed.sample(8);
  EXPECT_TRUE(torch::equal(a.context_images, b.context_images));
  EXPECT_TRUE(torch::equal(a.query_masks, b.query_masks));
  EXPECT_EQ(a.instructions, b.instructions);
  EXPECT_TRUE(b.query_images.device().is_cpu());
}

// The same seed on a CUDA device: the same tasks, slices, instructions and augmentation draws,
// values equal up to the device's float kernels (a mask pixel on a resampling edge may flip).
// Runs where a CUDA device is present (the GPU machine); skipped elsewhere.
TEST(EpisodeSampler, DeviceSamplingDrawsTheHostsEpisodes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto options = placement_options();
  auto pack = toy_pack(PackPurpose::kTrain, true);
  EpisodeSampler host(pack, options, 6), device(pack, options, 6);
  device.compute_on(torch::kCUDA);
  auto a = host.sample(16), b = device.sample(16);
  EXPECT_TRUE(b.context_images.device().is_cuda());
  EXPECT_EQ(a.instructions, b.instructions);
  EXPECT_EQ(a.task_names, b.task_names);
  EXPECT_TRUE(torch::equal(a.context_valid, b.context_valid.cpu()));
  EXPECT_LT((a.context_images - b.context_images.cpu()).abs().max().item<float>(), 1e-3f);
  EXPECT_LT((a.query_images - b.query_images.cpu()).abs().max().item<float>(), 1e-3f);
  EXPECT_LT((a.context_masks != b.context_masks.cpu()).to(torch::kFloat32).mean().item<float>(), 0.01f);
  EXPECT_EQ(host.state(), device.state());
}

TEST(EpisodeSampler, EvalPacksCannotFeedTraining) {
  EXPECT_THROW(EpisodeSampler(toy_pack(PackPurpose::kEval), {}, 1), UsageError);
}

TEST(SyntheticTask, SubjectsShareOneStructureWithVariation) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto [images, masks] = synthetic_task(4, 64, gen);
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{4, 1, 64, 64}));
  EXPECT_EQ(masks.sizes(), (std::vector<int64_t>{4, 1, 64, 64}));
  EXPECT_FALSE(torch::equal(masks[0], masks[1]));
  EXPECT_GE(images.min().item<float>(), 0.0f);
  EXPECT_LE(images.max().item<float>(), 1.0f);
}

TEST(MakeInstruction, MentionsTheStructure) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20; ++i) EXPECT_NE(make_instruction("left kidney", "MR", "abdomen", rng).find("left kidney"), std::string::npos);
}

}  // namespace segicl::data
