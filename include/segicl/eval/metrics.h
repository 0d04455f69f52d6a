// Overlap and surface-distance metrics between a predicted and a ground-truth binary mask
// (Dice, IoU, HD95). CPU, exact, deterministic. Not a report generator and not multi-class:
// callers binarise per task first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace segicl::eval {

// Masks: 2D [H, W] or 3D [D, H, W], any device (copied to CPU). Foreground is `true` for bool,
// value != 0 for integer dtypes (uint8 0/1 masks), value > 0.5 for floating dtypes
// (probabilities). pred and truth must have the same shape, else ShapeError naming both shapes.
//
// spacing: voxel size in mm, one value per tensor dimension in the tensor's order
// ([sd, sh, sw] for 3D, [sh, sw] for 2D); empty means 1 mm everywhere. Each value must be > 0.
// A wrong count is a ShapeError.
//
// All functions are pure and safe to call concurrently.

// Dice = 2|A∩B| / (|A| + |B|). Convention: both masks empty -> 1.0 (nothing to find, nothing
// found); compare() reports such pairs in Overlap::both_empty so reports can count them apart.
double dice(const at::Tensor& pred, const at::Tensor& truth);

// IoU (Jaccard) = |A∩B| / |A∪B|. Both empty -> 1.0, as dice.
double iou(const at::Tensor& pred, const at::Tensor& truth);

// 95th-percentile Hausdorff distance in mm. Surface = foreground voxels with at least one
// 4-connected (2D) or 6-connected (3D) background neighbour; voxels outside the grid count as
// background. For every surface voxel of one mask the distance to the nearest surface voxel of
// the other is taken from an exact Euclidean distance transform with anisotropic spacing
// (Felzenszwalb & Huttenlocher 2012, separable); the result is the larger of the two directed
// 95th percentiles (linear interpolation between order statistics, as numpy.percentile), the
// convention of MedPy, MONAI and DeepMind's surface-distance.
// Conventions: both empty -> 0.0; exactly one empty -> +infinity.
double hd95(const at::Tensor& pred, const at::Tensor& truth,
            const std::vector<double>& spacing = {});

// All of the above from one pass over the masks.
struct Overlap {
  double dice = 1.0;
  double iou = 1.0;
  double hd95 = 0.0;        // mm; +inf when exactly one mask is empty
  bool both_empty = true;   // neither mask has foreground: dice = iou = 1, hd95 = 0 by convention
  int64_t pred_voxels = 0;  // foreground voxel counts
  int64_t truth_voxels = 0;
};
Overlap compare(const at::Tensor& pred, const at::Tensor& truth,
                const std::vector<double>& spacing = {});

// Scores of a 3D mask pair restricted to the slices (planes across `axis`, a tensor dimension)
// where the truth has the structure: the settings of the few-shot literature, which a whole-volume
// Dice does not reproduce.
struct SliceScores {
  int64_t slices_with_truth = 0;  // planes holding truth; 0: the scores below are NaN
  // Dice over the planes from the first to the last one holding truth (SSL-ALPNet's validation:
  // Ouyang et al., ECCV 2020, scores only query slices z_min..z_max of the label, following
  // Roy et al., MedIA 2020). False positives outside that range do not count.
  double dice_in_extent = 0;
  // Mean of the per-plane Dice over the planes holding truth (the 2D setting of slice datasets
  // such as SegICL's SA-Med2D-20M: every image shows the structure).
  double mean_slice_dice = 0;
};
// pred and truth: 3D [D, H, W] (2D [H, W] counts as one plane); foreground as for dice().
// axis in [0, dim). ShapeError for mismatched shapes or a bad axis.
SliceScores slice_scores(const at::Tensor& pred, const at::Tensor& truth, int64_t axis);

// Exact squared Euclidean distance transform of a 2D/3D grid with anisotropic spacing: for each
// voxel, the squared distance in mm² to the nearest `true` voxel of `features` (bool, shape
// `sizes`, row-major), +infinity if there is none. Exposed for tests and other metrics (ASSD).
std::vector<double> squared_distance_transform(const std::vector<uint8_t>& features,
                                               const std::vector<int64_t>& sizes,
                                               const std::vector<double>& spacing);

}  // namespace segicl::eval
