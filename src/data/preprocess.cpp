// Canonical orientation, slicing, intensity normalisation, resizing, and their inverses.
#include "segicl/data/preprocess.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "segicl/core/error.h"

namespace segicl::data {
namespace F = torch::nn::functional;

namespace {

// io buffers are x fastest with channels interleaved: [Z, Y, X, C] -> [C, Z, Y, X].
torch::Tensor volume_tensor(const io::Volume& v) {
  auto t = torch::from_blob(const_cast<float*>(v.voxels.data()),
                            {v.size[2], v.size[1], v.size[0], v.channels}, torch::kFloat32);
  return t.permute({3, 0, 1, 2}).contiguous();
}

torch::Tensor label_tensor(const io::LabelMap& l) {
  std::vector<int32_t> values(l.labels.begin(), l.labels.end());
  return torch::from_blob(values.data(), {l.size[2], l.size[1], l.size[0]}, torch::kInt32).clone();
}

// Canonical [.., Z, Y, X] from source [.., Z, Y, X] (leading dims untouched).
torch::Tensor reorient(const torch::Tensor& t, const Reorientation& r) {
  int64_t lead = t.dim() - 3;
  std::vector<int64_t> order;
  for (int64_t d = 0; d < lead; ++d) order.push_back(d);
  for (int a = 2; a >= 0; --a) order.push_back(lead + 2 - r.source_axis[a]);
  auto out = t.permute(order);
  std::vector<int64_t> flips;
  for (int a = 0; a < 3; ++a)
    if (r.flip[a]) flips.push_back(lead + 2 - a);
  if (!flips.empty()) out = out.flip(flips);
  return out.contiguous();
}

// Inverse of reorient for a [Z, Y, X] tensor.
torch::Tensor unorient(const torch::Tensor& t, const Reorientation& r) {
  std::vector<int64_t> flips;
  for (int a = 0; a < 3; ++a)
    if (r.flip[a]) flips.push_back(2 - a);
  auto out = flips.empty() ? t : t.flip(flips);
  std::array<int, 3> canonical_of{};
  for (int a = 0; a < 3; ++a) canonical_of[r.source_axis[a]] = a;
  std::vector<int64_t> order;
  for (int d = 0; d < 3; ++d) order.push_back(2 - canonical_of[2 - d]);
  return out.permute(order).contiguous();
}

// [C, rows, cols] plane of a [C, Z, Y, X] tensor. Non-axial planes get superior at the top.
torch::Tensor plane_of(const torch::Tensor& t, int axis, int64_t index) {
  switch (axis) {
    case 2: return t.select(1, index);
    case 1: return t.select(2, index).flip({1});
    default: return t.select(3, index).flip({1});
  }
}

torch::Tensor pad_to_square(const torch::Tensor& plane) {  // [C, rows, cols]
  int64_t rows = plane.size(1), cols = plane.size(2), side = std::max(rows, cols);
  int64_t top = (side - rows) / 2, left = (side - cols) / 2;
  return F::pad(plane, F::PadFuncOptions({left, side - cols - left, top, side - rows - top}));
}

torch::Tensor resize(const torch::Tensor& batch, int64_t size, bool nearest) {  // [N, C, H, W]
  if (batch.size(-1) == size && batch.size(-2) == size) return batch;
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size});
  if (nearest) return F::interpolate(batch, options.mode(torch::kNearest));
  if (batch.size(-1) > size) return F::interpolate(batch, options.mode(torch::kArea));
  return F::interpolate(batch, options.mode(torch::kBilinear).align_corners(false));
}

}  // namespace

Reorientation canonical_reorientation(const io::Geometry& g) {
  Reorientation r;
  std::array<bool, 3> world_used{}, index_used{};
  // Greedy: the strongest direction cosines claim their world axis first, so oblique scans snap
  // to the nearest axis without two index axes landing on one world axis.
  for (int step = 0; step < 3; ++step) {
    double best = -1;
    int best_world = 0, best_index = 0;
    for (int w = 0; w < 3; ++w)
      for (int i = 0; i < 3; ++i)
        if (!world_used[w] && !index_used[i] && std::abs(g.direction[w * 3 + i]) > best)
          best = std::abs(g.direction[w * 3 + i]), best_world = w, best_index = i;
    world_used[best_world] = index_used[best_index] = true;
    r.source_axis[best_world] = best_index;
    r.flip[best_world] = g.direction[best_world * 3 + best_index] < 0;
  }
  return r;
}

int through_plane_axis(const std::array<double, 3>& spacing, const std::array<int64_t, 3>& size,
                       bool spacing_known, int dims) {
  if (dims == 2) return 2;
  int coarsest = 2;
  for (int a = 1; a >= 0; --a)
    if (spacing[a] > spacing[coarsest] * (1 + 1e-6)) coarsest = a;
  bool clearly_coarser = spacing_known;
  for (int a = 0; a < 3; ++a)
    if (a != coarsest && spacing[coarsest] < 1.25 * spacing[a]) clearly_coarser = false;
  if (clearly_coarser) return coarsest;
  // Near-isotropic grids: the acquisition axis is the one with the fewest voxels (BTCV was
  // resampled to 128 px in-plane, so in-plane spacing can exceed the 3 mm slice spacing).
  int fewest = 2;
  for (int a = 1; a >= 0; --a)
    if (size[a] < size[fewest]) fewest = a;
  return fewest;
}

int64_t PreparedVolume::num_slices() const { return image.size(3 - through_axis); }

std::pair<int64_t, int64_t> PreparedVolume::plane_shape() const {
  switch (through_axis) {
    case 2: return {image.size(2), image.size(3)};
    case 1: return {image.size(1), image.size(3)};
    default: return {image.size(1), image.size(2)};
  }
}

torch::Tensor to_luminance(const torch::Tensor& image) {
  if (image.size(0) != 3) return image;
  return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0);
}

PreparedVolume prepare(const io::Volume& image, const io::LabelMap* labels,
                       const std::string& modality, const PreprocessOptions& options) {
  if (image.num_voxels() <= 0) SEGICL_THROW(DataError, "empty image", "", "");
  PreparedVolume out;
  out.dims = image.dims;
  out.source_size = image.size;
  out.reorientation = image.dims == 3 ? canonical_reorientation(image.geometry) : Reorientation{};
  torch::Tensor t = volume_tensor(image);
  if (options.luminance) t = to_luminance(t);

  const bool is_ct = modality.find("CT") != std::string::npos;
  if (is_ct && t.min().item<float>() < -50.0f) {
    t = ((t - options.ct_window_low) / (options.ct_window_high - options.ct_window_low)).clamp(0, 1);
  } else {
    auto flat = t.flatten();
    const int64_t max_samples = 1 << 20;  // quantile cost; a strided subsample is plenty
    if (flat.numel() > max_samples) flat = flat.slice(0, 0, flat.numel(), flat.numel() / max_samples + 1);
    auto q = torch::quantile(flat, torch::tensor({options.low_percentile / 100.0, options.high_percentile / 100.0},
                                                 torch::kFloat32));
    float lo = q[0].item<float>(), hi = q[1].item<float>();
    if (hi - lo < 1e-6f) {
      // Constant image: no contrast to normalise; map to zeros rather than divide by zero.
      t = torch::zeros_like(t);
    } else {
      t = ((t - lo) / (hi - lo)).clamp(0, 1);
    }
  }
  out.image = reorient(t, out.reorientation);
  if (labels) {
    if (labels->size != image.size)
      SEGICL_THROW(DataError, "label map and image have different sizes", "",
                   "the label file must be on the image's grid");
    out.labels = reorient(label_tensor(*labels), out.reorientation);
  }
  for (int a = 0; a < 3; ++a) out.spacing[a] = image.geometry.spacing[out.reorientation.source_axis[a]];
  std::array<int64_t, 3> canonical_size{out.image.size(3), out.image.size(2), out.image.size(1)};
  out.through_axis = through_plane_axis(out.spacing, canonical_size, image.geometry.spacing_known, image.dims);
  return out;
}

torch::Tensor image_plane(const PreparedVolume& v, int64_t index, int resolution) {
  auto plane = pad_to_square(plane_of(v.image, v.through_axis, index));
  return resize(plane.unsqueeze(0), resolution, false).squeeze(0).contiguous();
}

torch::Tensor label_plane(const PreparedVolume& v, int64_t index, int resolution) {
  auto plane = pad_to_square(plane_of(v.labels.unsqueeze(0), v.through_axis, index).to(torch::kFloat32));
  return resize(plane.unsqueeze(0), resolution, true).squeeze(0).squeeze(0).round().to(torch::kInt32);
}

torch::Tensor planes_to_source_grid(const torch::Tensor& planes, const PreparedVolume& v) {
  if (planes.dim() != 3 || planes.size(0) != v.num_slices())
    SEGICL_THROW(ShapeError,
                 "expected [" + std::to_string(v.num_slices()) + ", R, R] planes, got " +
                     c10::str(planes.sizes()),
                 "", "");
  auto [rows, cols] = v.plane_shape();
  int64_t side = std::max(rows, cols), top = (side - rows) / 2, left = (side - cols) / 2;
  auto square = resize(planes.unsqueeze(1).to(torch::kFloat32), side, false).squeeze(1);
  auto cropped = square.slice(1, top, top + rows).slice(2, left, left + cols);
  torch::Tensor canonical;
  switch (v.through_axis) {
    case 2: canonical = cropped; break;
    case 1: canonical = cropped.flip({1}).permute({1, 0, 2}); break;
    default: canonical = cropped.flip({1}).permute({1, 2, 0}); break;
  }
  return unorient(canonical.contiguous(), v.reorientation);
}

io::LabelMap to_label_map(const torch::Tensor& grid, const io::Geometry& geometry, int dims,
                          double threshold) {
  io::LabelMap out;
  out.dims = dims;
  out.size = {grid.size(2), grid.size(1), grid.size(0)};
  out.geometry = geometry;
  auto mask = (grid > threshold).to(torch::kUInt8).contiguous();
  const uint8_t* p = mask.data_ptr<uint8_t>();
  out.labels.assign(p, p + mask.numel());
  return out;
}

io::Volume to_volume(const torch::Tensor& grid, const io::Geometry& geometry, int dims) {
  io::Volume out;
  out.dims = dims;
  out.size = {grid.size(2), grid.size(1), grid.size(0)};
  out.geometry = geometry;
  auto values = grid.to(torch::kFloat32).contiguous();
  const float* p = values.data_ptr<float>();
  out.voxels.assign(p, p + values.numel());
  return out;
}

}  // namespace segicl::data
