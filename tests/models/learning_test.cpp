// Slow learning tests (ctest label `integration`): the tiny preset learns (a)
// stage 1 - masks reconstructed through condition tokens -> DDIM -> AE decode,
// and (b) stage 2 - in-context segmentation of a synthetic task only
// identifiable from the examples. Plus an unasserted timing print of the cpu
// preset. All data is synthesised here; nothing is read from disk.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

#include "segicl/models/segicl_model.h"

namespace segicl::models {
namespace {

// Random ellipse with centre, radii and angle drawn from `rng`, rasterised at
// side r.
torch::Tensor ellipse(std::mt19937 &rng, int64_t r, double min_radius, double max_radius) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double cx = r * (0.25 + 0.5 * u(rng)), cy = r * (0.25 + 0.5 * u(rng));
  const double a = min_radius + (max_radius - min_radius) * u(rng);
  const double b = min_radius + (max_radius - min_radius) * u(rng);
  const double angle = M_PI * u(rng);
  auto ys = torch::arange(r, torch::kFloat32).view({r, 1}).expand({r, r}) + 0.5 - cy;
  auto xs = torch::arange(r, torch::kFloat32).view({1, r}).expand({r, r}) + 0.5 - cx;
  auto u1 = xs * std::cos(angle) + ys * std::sin(angle);
  auto v1 = -xs * std::sin(angle) + ys * std::cos(angle);
  return ((u1 / a).pow(2) + (v1 / b).pow(2) <= 1.0).to(torch::kFloat32);
}

// Masks of one or two ellipses [n, 1, r, r].
torch::Tensor blob_masks(std::mt19937 &rng, int64_t n, int64_t r) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < n; ++i) {
    auto m = ellipse(rng, r, r * 0.1, r * 0.3);
    if (rng() % 2) m = torch::maximum(m, ellipse(rng, r, r * 0.08, r * 0.2));
    out.push_back(m.unsqueeze(0));
  }
  return torch::stack(out);
}

// One image of three blobs at three distinct intensity levels, one of them
// `level`; returns the image [1, r, r] and the mask [1, r, r] of the visible
// part of the blob at `level`.
constexpr double kLevels[] = {0.25, 0.5, 0.75, 1.0};

std::pair<torch::Tensor, torch::Tensor> level_image(std::mt19937 &rng, int64_t r, int level) {
  std::vector<int> others;
  for (int l = 0; l < 4; ++l)
    if (l != level) others.push_back(l);
  std::shuffle(others.begin(), others.end(), rng);
  std::vector<int> order{level, others[0], others[1]};
  std::shuffle(order.begin(), order.end(), rng);
  auto label = torch::full({r, r}, -1, torch::kLong);
  for (int l : order) label.masked_fill_(ellipse(rng, r, r * 0.12, r * 0.22).to(torch::kBool), l);
  auto image = torch::zeros({r, r});
  for (int l = 0; l < 4; ++l) image += (label == l).to(torch::kFloat32) * kLevels[l];
  image = (image + 0.03 * torch::randn({r, r})).clamp(0, 1);
  return {image.unsqueeze(0), (label == level).to(torch::kFloat32).unsqueeze(0)};
}

// The tiny model's tensors are so small that per-op overhead dominates: one
// thread measured 1.9x faster per training step than two on the shared 2-core
// machine (0.047 s vs 0.089 s).
constexpr int kTinyThreads = 1;

double dice(const torch::Tensor &prediction, const torch::Tensor &target) {
  auto p = prediction.flatten(1), t = target.flatten(1);
  auto d = (2 * (p * t).sum(1) + 1e-6) / (p.sum(1) + t.sum(1) + 1e-6);
  return d.mean().item<double>();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Stage 1 on `make(batch)` -> (masks, images) pairs for `steps` steps.
using MakePairs = std::function<std::pair<torch::Tensor, torch::Tensor>(int64_t)>;

void train_stage1(SegICLModel &model, int steps, int64_t batch, const MakePairs &make) {
  model->train();
  model->set_stage(1);
  torch::optim::AdamW opt(model->parameters_for_stage(1),
                          torch::optim::AdamWOptions(3e-3).weight_decay(0));
  for (int step = 0; step < steps; ++step) {
    auto [masks, images] = make(batch);
    auto losses = model->stage1_loss(masks, images, {});
    opt.zero_grad();
    losses.total.backward();
    opt.step();
    if (step % 100 == 0 || step == steps - 1)
      std::printf("stage1 step %d: recon %.4f diffusion %.4f\n", step,
                  losses.reconstruction.item<float>(), losses.diffusion.item<float>()),
          std::fflush(stdout);
  }
  model->eval();
}

TEST(TinyLearns, Stage1ReconstructsHeldOutMasksThroughDiffusion) {
  at::set_num_threads(kTinyThreads);
  torch::manual_seed(0);
  auto c = load_preset("tiny");
  SegICLModel model(c);
  const int64_t r = c.resolution;
  std::mt19937 rng(1);
  auto start = std::chrono::steady_clock::now();
  // The hint image is noise here: the mask must come from the condition tokens
  // alone.
  train_stage1(model, 1500, 32, [&](int64_t b) {
    return std::make_pair(blob_masks(rng, b, r), torch::rand({b, 1, r, r}));
  });
  std::printf("stage 1 training: %.1f s\n", seconds_since(start));
  std::mt19937 held_out(12345);
  auto masks = blob_masks(held_out, 32, r);
  auto images = torch::rand({32, 1, r, r});
  torch::NoGradGuard no_grad;
  auto recon = torch::sigmoid(model->autoencoder->decode(model->autoencoder->encode(masks)));
  double ae_dice = dice((recon > 0.5).to(torch::kFloat32), masks);
  SegmentOptions opt;
  opt.ddim_steps = 10;
  opt.num_samples = 5;  // averaged before thresholding, as §4.2 averages 5 predictions
  opt.seed = 3;
  auto tokens = model->condition_encoder(masks);
  auto pred = model->decode_condition(tokens, torch::zeros({32, c.cond_dim}), images, opt);
  double full_dice = dice((pred.probability > 0.5).to(torch::kFloat32), masks);
  std::printf(
      "held-out Dice: autoencoder %.3f, tokens->DDIM(10 steps, mean of "
      "5)->decode %.3f\n",
      ae_dice, full_dice);
  EXPECT_GE(full_dice, 0.9);
}

TEST(TinyLearns, Stage2SegmentsAnUnseenEpisodeFromThreeExamples) {
  at::set_num_threads(kTinyThreads);
  torch::manual_seed(0);
  auto c = load_preset("tiny");
  SegICLModel model(c);
  const int64_t r = c.resolution, k = 3;
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> pick_level(0, 3);
  auto start = std::chrono::steady_clock::now();
  train_stage1(model, 800, 32, [&](int64_t b) {
    std::vector<torch::Tensor> images, masks;
    for (int64_t i = 0; i < b; ++i) {
      auto [image, mask] = level_image(rng, r, pick_level(rng));
      images.push_back(image), masks.push_back(mask);
    }
    return std::make_pair(torch::stack(masks), torch::stack(images));
  });
  // Episodes: every image of an episode contains the target level; only the
  // examples say which.
  auto episodes = [&](std::mt19937 &g, int64_t b) {
    data::EpisodeBatch batch;
    std::vector<torch::Tensor> qi, qm, ci, cm;
    for (int64_t e = 0; e < b; ++e) {
      int level = pick_level(g);
      auto [image, mask] = level_image(g, r, level);
      qi.push_back(image), qm.push_back(mask);
      std::vector<torch::Tensor> ei, em;
      for (int64_t j = 0; j < k; ++j) {
        auto [ximage, xmask] = level_image(g, r, level);
        ei.push_back(ximage), em.push_back(xmask);
      }
      ci.push_back(torch::stack(ei)), cm.push_back(torch::stack(em));
    }
    batch.query_images = torch::stack(qi);
    batch.query_masks = torch::stack(qm);
    batch.context_images = torch::stack(ci);
    batch.context_masks = torch::stack(cm);
    batch.context_valid = torch::ones({b, k}, torch::kBool);
    batch.instructions.assign(static_cast<size_t>(b), "segment the blob shown in the examples");
    return batch;
  };
  model->train();
  model->set_stage(2);
  torch::optim::AdamW opt(model->parameters_for_stage(2),
                          torch::optim::AdamWOptions(1e-3).weight_decay(0));
  for (int step = 0; step < 800; ++step) {
    auto loss = model->stage2_loss(episodes(rng, 32));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 200 == 0 || step == 799)
      std::printf("stage2 step %d: mse %.4f\n", step, loss.item<float>()), std::fflush(stdout);
  }
  model->eval();
  std::printf("stage 1 + 2 training: %.1f s\n", seconds_since(start));

  std::mt19937 held_out(777);
  double with_examples = 0, without = 0, mean_examples = 0;
  const int64_t n_eval = 24;
  for (int64_t e = 0; e < n_eval; ++e) {
    auto ep = episodes(held_out, 1);
    SegmentOptions so;
    so.ddim_steps = 10;
    so.seed = static_cast<uint64_t>(e);
    const std::string text = ep.instructions[0];
    auto three = model->encode_context(ep.context_images[0], ep.context_masks[0], text);
    auto zero = model->encode_context({}, {}, text);
    auto p3 = model->segment(three, ep.query_images, so).probability;
    auto p0 = model->segment(zero, ep.query_images, so).probability;
    with_examples += dice((p3 > 0.5).to(torch::kFloat32), ep.query_masks) / n_eval;
    without += dice((p0 > 0.5).to(torch::kFloat32), ep.query_masks) / n_eval;
    mean_examples += dice(ep.context_masks[0].mean(0, true), ep.query_masks) / n_eval;
  }
  std::printf(
      "held-out Dice: 3 examples %.3f, 0 examples %.3f, mean of "
      "example masks %.3f\n",
      with_examples, without, mean_examples);
  EXPECT_GT(with_examples, without);
  EXPECT_GT(with_examples, mean_examples);
}

// The crossconv architecture learns the same level task in one stage, from the examples (k = 3,
// no text) and from the text alone (k = 0: the instruction names the level).
TEST(CrossconvTinyLearns, ExamplesAndTextEachIdentifyTheTarget) {
  at::set_num_threads(kTinyThreads);
  torch::manual_seed(0);
  auto c = load_preset("crossconv-tiny");
  SegICLModel model(c);
  const int64_t r = c.resolution;
  const char *kWords[] = {"dim", "grey", "light", "bright"};
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pick_level(0, 3), pick_k(0, 3);
  // k pairs (padded to 3), an instruction naming the level half of the time (always at k = 0).
  auto episodes = [&](std::mt19937 &g, int64_t b, int k_fixed, int text_level) {
    data::EpisodeBatch batch;
    std::vector<torch::Tensor> qi, qm, ci, cm, valid;
    for (int64_t e = 0; e < b; ++e) {
      const int level = pick_level(g), k = k_fixed >= 0 ? k_fixed : pick_k(g);
      auto [image, mask] = level_image(g, r, level);
      qi.push_back(image), qm.push_back(mask);
      std::vector<torch::Tensor> ei, em;
      for (int64_t j = 0; j < 3; ++j) {
        auto [ximage, xmask] = level_image(g, r, level);
        ei.push_back(ximage), em.push_back(xmask);
      }
      ci.push_back(torch::stack(ei)), cm.push_back(torch::stack(em));
      valid.push_back(torch::arange(3) < k);
      const bool with_text = k == 0 || g() % 2;
      const int named = text_level == -2 ? (level + 1) % 4 : level;  // -2: name the wrong level
      batch.instructions.push_back(with_text ? std::string("segment the ") + kWords[named] + " blob" : "");
    }
    batch.query_images = torch::stack(qi);
    batch.query_masks = torch::stack(qm);
    batch.context_images = torch::stack(ci);
    batch.context_masks = torch::stack(cm);
    batch.context_valid = torch::stack(valid);
    return batch;
  };
  model->train();
  model->set_stage(1);
  torch::optim::AdamW opt(model->parameters_for_stage(1), torch::optim::AdamWOptions(2e-3).weight_decay(0));
  auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < 600; ++step) {
    auto loss = model->crossconv_loss(episodes(rng, 16, -1, -1));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 100 == 0 || step == 599) std::printf("crossconv step %d: loss %.4f\n", step, loss.item<float>()), std::fflush(stdout);
  }
  model->eval();
  std::printf("crossconv training: %.1f s\n", seconds_since(start));
  torch::NoGradGuard no_grad;
  auto run = [&](const data::EpisodeBatch &ep, int k) {
    auto logits = model->crossconv(ep.query_images, ep.context_images.narrow(1, 0, k),
                                   ep.context_masks.narrow(1, 0, k), ep.context_valid.narrow(1, 0, k),
                                   model->crossconv->word_ids(ep.instructions, torch::kCPU));
    return (torch::sigmoid(logits) > 0.5).to(torch::kFloat32);
  };
  std::mt19937 held_out(778), held_out_wrong(778);
  auto examples_only = episodes(held_out, 32, 3, -1);
  examples_only.instructions.assign(32, "");
  auto right_text = episodes(held_out, 32, 0, -1);
  episodes(held_out_wrong, 32, 3, -1);  // same draws as above, so the next batch repeats right_text
  auto wrong_text = episodes(held_out_wrong, 32, 0, -2);  // with the wrong level named
  const double with_examples = dice(run(examples_only, 3), examples_only.query_masks);
  const double atlas = dice(examples_only.context_masks.mean(1), examples_only.query_masks);
  const double text_right = dice(run(right_text, 0), right_text.query_masks);
  const double text_wrong = dice(run(wrong_text, 0), wrong_text.query_masks);
  std::printf("held-out Dice: 3 examples %.3f (atlas %.3f); text only: right level %.3f, wrong level %.3f\n",
              with_examples, atlas, text_right, text_wrong);
  EXPECT_GT(with_examples, atlas + 0.2);
  EXPECT_GT(text_right, text_wrong + 0.2);
}

// Not a test of speed (timings are never asserted): prints the cpu preset's
// segment() time at k = 3, 4 DDIM steps, batch 1, 2 threads, random weights.
TEST(CpuPresetTiming, PrintsSegmentTimeAtThreeExamples) {
  at::set_num_threads(2);
  torch::manual_seed(0);
  for (const char *name : {"tiny", "cpu", "gpu", "paper"}) {
    auto pc = load_preset(name);
    std::printf("%s: %lld params, %.3g FLOPs/query (k=3, 4 DDIM steps)\n", name,
                static_cast<long long>(count_parameters(pc)), flops_per_query(pc, 3, 4));
    for (const auto &part : count_parameters_by_part(pc))
      std::printf("  %s %lld\n", part.first.c_str(), static_cast<long long>(part.second));
  }
  {
    auto a = torch::randn({1024, 1024});
    torch::matmul(a, a);
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) torch::matmul(a, a);
    std::printf("matmul 1024^2: %.1f GFLOP/s\n",
                5 * 2.0 * 1024 * 1024 * 1024 / seconds_since(start) / 1e9);
  }
  auto c = load_preset("cpu");
  SegICLModel model(c);
  model->eval();
  const int64_t r = c.resolution;
  auto ctx = model->encode_context(torch::rand({3, 1, r, r}), torch::ones({3, 1, r, r}), "liver");
  auto query = torch::rand({1, 1, r, r});
  SegmentOptions opt;
  opt.ddim_steps = 4;
  std::vector<double> times;
  for (int i = 0; i < 7; ++i) {
    auto start = std::chrono::steady_clock::now();
    model->segment(ctx, query, opt);
    times.push_back(seconds_since(start));
  }
  std::sort(times.begin(), times.end());
  auto start = std::chrono::steady_clock::now();
  model->encode_context(torch::rand({3, 1, r, r}), torch::ones({3, 1, r, r}), "liver");
  std::printf(
      "cpu preset: segment median %.4f s (min %.4f), "
      "encode_context(k=3) %.4f s, %lld params\n",
      times[3], times[0], seconds_since(start), static_cast<long long>(count_parameters(c)));
}

}  // namespace
}  // namespace segicl::models
