// Picking context examples out of a labelled volume: which slices to show the model (well spread
// over the structure) and the binary mask plane of one slice. Shared by inference (segicl_infer)
// and evaluation. Not an episode sampler (see episodes.h): no randomness here.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "segicl/data/preprocess.h"

namespace segicl::data {

// Indices (along volume.through_axis, ascending) of up to `count` slices that contain at least
// `min_pixels` voxels of any label in `label_ids` (empty = any non-zero label), evenly spaced over
// the positive slices by their rank: with P positives, pick ranks round(i * (P - 1) / (count - 1)),
// i = 0..count-1 (count == 1: the middle positive). So positives 10..30 and count 3 give
// {10, 20, 30}. Chosen slices are adjacent only when count > (P + 1) / 2 for a contiguous run.
// Returns all positives when P <= count, and {} when P == 0.
// REQUIRES volume.labels defined (DataError otherwise), count >= 0, min_pixels >= 1.
std::vector<int64_t> spread_example_slices(const PreparedVolume& volume, const std::vector<int>& label_ids,
                                           int count, int min_pixels = 3);

// The ranks (0-based, ascending) that spread_example_slices takes out of `size` ordered items:
// all when size <= count, the middle one (size / 2) for count 1, else round(i * (size - 1) /
// (count - 1)). REQUIRES size >= 0, count >= 0 (UsageError otherwise).
std::vector<int64_t> spread_ranks(int64_t size, int count);

// The binary mask plane of slice `slice`: [1, R, R] float32 in {0, 1}, 1 where the label is in
// `label_ids` (empty = any non-zero label). Same padding/resizing as label_plane (nearest).
// Throws DataError without labels, ShapeError for a slice index out of range.
torch::Tensor binary_plane(const PreparedVolume& volume, int64_t slice, const std::vector<int>& label_ids,
                           int resolution);

// Self-prompting (a second pass on the query's own prediction): indices of up to `count` planes
// of `probability` [N, R, R] to reuse as examples, the planes with the most pixels above
// `threshold` (at least `min_pixels`), each at least `min_gap` planes from those already chosen,
// in order of area. {} when no plane qualifies. REQUIRES count >= 0, min_gap >= 1.
std::vector<int64_t> confident_planes(const torch::Tensor& probability, int count, double threshold = 0.5,
                                      int64_t min_pixels = 16, int64_t min_gap = 2);

// Voxels per slice (along through_axis) whose label is in `label_ids`: [num_slices] int64.
torch::Tensor label_voxels_per_slice(const PreparedVolume& volume, const std::vector<int>& label_ids);

}  // namespace segicl::data
