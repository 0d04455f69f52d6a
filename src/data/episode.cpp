// EpisodeBatch device transfer.
#include "segicl/data/episode.h"

#include <torch/torch.h>

namespace segicl::data {

EpisodeBatch EpisodeBatch::to(const torch::Device& device) const {
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device, true) : t; };
  EpisodeBatch out = *this;
  out.query_images = move(query_images);
  out.query_masks = move(query_masks);
  out.context_images = move(context_images);
  out.context_masks = move(context_masks);
  out.context_valid = move(context_valid);
  return out;
}

}  // namespace segicl::data
