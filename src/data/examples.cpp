// Context-example slice selection and binary mask planes (see examples.h).
#include "segicl/data/examples.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "segicl/core/error.h"

namespace segicl::data {
namespace {

torch::Tensor selected(const torch::Tensor& labels, const std::vector<int>& label_ids) {
  if (label_ids.empty()) return labels != 0;
  auto mask = torch::zeros_like(labels, torch::kBool);
  for (int id : label_ids) mask = mask | (labels == id);
  return mask;
}

void require_labels(const PreparedVolume& volume) {
  if (!volume.labels.defined())
    SEGICL_THROW(DataError, "the prepared volume has no label map", "", "pass labels to data::prepare");
}

}  // namespace

torch::Tensor label_voxels_per_slice(const PreparedVolume& volume, const std::vector<int>& label_ids) {
  require_labels(volume);
  // labels are [Z, Y, X]: canonical axis a is tensor dim 2 - a.
  const int64_t slice_dim = 2 - volume.through_axis;
  std::vector<int64_t> other;
  for (int64_t d = 0; d < 3; ++d)
    if (d != slice_dim) other.push_back(d);
  return selected(volume.labels, label_ids).sum(other).to(torch::kInt64).contiguous();
}

std::vector<int64_t> spread_example_slices(const PreparedVolume& volume, const std::vector<int>& label_ids,
                                           int count, int min_pixels) {
  if (count < 0 || min_pixels < 1)
    SEGICL_THROW(UsageError, "spread_example_slices needs count >= 0 and min_pixels >= 1", "", "");
  auto per_slice = label_voxels_per_slice(volume, label_ids);
  const int64_t* counts = per_slice.data_ptr<int64_t>();
  std::vector<int64_t> positives;
  for (int64_t s = 0; s < per_slice.numel(); ++s)
    if (counts[s] >= min_pixels) positives.push_back(s);
  std::vector<int64_t> out;
  for (int64_t rank : spread_ranks(static_cast<int64_t>(positives.size()), count)) out.push_back(positives[rank]);
  return out;
}

std::vector<int64_t> spread_ranks(int64_t size, int count) {
  if (size < 0 || count < 0) SEGICL_THROW(UsageError, "spread_ranks needs size >= 0 and count >= 0", "", "");
  std::vector<int64_t> out;
  if (size <= count) {
    for (int64_t r = 0; r < size; ++r) out.push_back(r);
    return out;
  }
  if (count == 0) return out;
  if (count == 1) return {size / 2};
  for (int i = 0; i < count; ++i)
    // Even spacing by rank keeps examples apart even when the structure's slices are not contiguous.
    out.push_back(static_cast<int64_t>(std::llround(static_cast<double>(i) * (size - 1) / (count - 1))));
  return out;
}

std::vector<int64_t> confident_planes(const torch::Tensor& probability, int count, double threshold,
                                      int64_t min_pixels, int64_t min_gap) {
  if (count < 0 || min_gap < 1) SEGICL_THROW(UsageError, "confident_planes needs count >= 0 and min_gap >= 1", "", "");
  if (probability.dim() != 3)
    SEGICL_THROW(ShapeError, "confident_planes expects [N, R, R] probabilities, got " + c10::str(probability.sizes()),
                 "", "");
  auto area = (probability > threshold).flatten(1).sum(1).to(torch::kLong).contiguous();
  const int64_t* pixels = area.data_ptr<int64_t>();
  std::vector<int64_t> order(area.numel());
  for (int64_t s = 0; s < area.numel(); ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pixels[a] > pixels[b]; });
  std::vector<int64_t> chosen;
  for (int64_t s : order) {
    if (static_cast<int>(chosen.size()) >= count || pixels[s] < min_pixels) break;
    bool apart = std::all_of(chosen.begin(), chosen.end(), [&](int64_t c) { return std::abs(c - s) >= min_gap; });
    if (apart) chosen.push_back(s);
  }
  return chosen;
}

torch::Tensor binary_plane(const PreparedVolume& volume, int64_t slice, const std::vector<int>& label_ids,
                           int resolution) {
  require_labels(volume);
  if (slice < 0 || slice >= volume.num_slices())
    SEGICL_THROW(ShapeError,
                 "slice " + std::to_string(slice) + " is outside [0, " + std::to_string(volume.num_slices()) + ")",
                 "", "");
  auto plane = label_plane(volume, slice, resolution);  // [R, R] int32
  return selected(plane, label_ids).to(torch::kFloat32).unsqueeze(0);
}

}  // namespace segicl::data
