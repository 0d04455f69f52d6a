// Reverse-prediction agreement per query plane and the plane filter built on it (see presence.h).
#include "segicl/infer/presence.h"

#include <torch/torch.h>

#include "segicl/core/error.h"

namespace segicl::infer {

torch::Tensor reverse_agreement(models::SegICLModelImpl& model, const torch::Tensor& query_planes,
                                const torch::Tensor& probabilities, const torch::Tensor& context_images,
                                const torch::Tensor& context_masks, const PresenceOptions& options) {
  torch::NoGradGuard no_grad;
  const int64_t n = query_planes.size(0);
  if (probabilities.dim() != 3 || probabilities.size(0) != n)
    SEGICL_THROW(ShapeError, "reverse_agreement: one probability plane per query plane is needed", "", "");
  if (!context_images.defined() || context_images.size(0) == 0)
    SEGICL_THROW(UsageError, "reverse_agreement needs at least one context pair", "",
                 "the presence check works from examples (or recalled pairs), not from text alone");
  auto truth = (context_masks.to(torch::kCPU) > 0.5).to(torch::kFloat32).flatten(1);  // [K, R*R]
  auto masks = (probabilities.to(torch::kCPU) > 0.5).to(torch::kFloat32);               // [N, R, R]
  auto agreement = torch::zeros({n}, torch::kFloat64);
  for (int64_t s = 0; s < n; ++s) {
    if (masks[s].sum().item<double>() == 0) continue;
    // No text: the instruction alone would find the structure in the context images whatever the
    // plane shows, and the agreement would no longer test the plane's mask.
    auto context = model.encode_context(query_planes.narrow(0, s, 1), masks.narrow(0, s, 1).unsqueeze(1), "");
    auto reverse = model.segment(context, context_images, options.segment).probability.to(torch::kCPU);
    auto predicted = (reverse > 0.5).to(torch::kFloat32).flatten(1);  // [K, R*R]
    auto overlap = (predicted * truth).sum(1), total = predicted.sum(1) + truth.sum(1);
    auto dice = torch::where(total > 0, 2 * overlap / total.clamp_min(1), torch::ones_like(total));
    agreement[s] = dice.mean().item<double>();
  }
  return agreement;
}

torch::Tensor drop_absent_planes(const torch::Tensor& probabilities, const torch::Tensor& agreement,
                                 double min_relative_agreement) {
  auto out = probabilities.clone();
  if (min_relative_agreement <= 0) return out;
  const double best = agreement.max().item<double>();
  if (best <= 0) return out;
  auto absent = (agreement < min_relative_agreement * best).to(out.device()).view({-1, 1, 1});
  return out.masked_fill_(absent, 0);
}

}  // namespace segicl::infer
