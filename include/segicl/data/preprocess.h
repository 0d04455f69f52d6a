// Preprocessing between files on their own grid and the model's fixed-size 2D planes, and back:
// reorientation to a canonical axis order, slicing along the through-plane axis, intensity
// normalisation (SA-Med2D-20M style, as the paper's [44]), pad-to-square + resize. Every forward
// step has its inverse here, so a mask predicted on model planes lands on the input's exact grid.
// Not an augmentation module (see episodes.h).
#pragma once

#include <torch/types.h>

#include <array>
#include <string>

#include "segicl/io/volume.h"

namespace segicl::data {

struct PreprocessOptions {
  int resolution = 128;            // model plane size R (R x R)
  bool luminance = true;           // RGB -> one luminance channel (ITU-R BT.601); false keeps RGB
  double low_percentile = 0.5;     // intensity clip, per image/volume (%)
  double high_percentile = 99.5;
  // CT in Hounsfield units is windowed instead (abdominal soft tissue; matches BTCV's upstream
  // window [-125, 275] HU). Applied when the modality says CT and values reach below -50.
  double ct_window_low = -125.0;
  double ct_window_high = 275.0;
  double empty_slice_fraction = 0.1;  // fraction of label-free 3D slices kept by slice_case()
};

// How a volume's index axes map to the canonical order: canonical axis a (0 = patient left,
// 1 = posterior, 2 = superior, ITK LPS) is source axis `source_axis[a]`, reversed if flip[a].
struct Reorientation {
  std::array<int, 3> source_axis{0, 1, 2};
  std::array<bool, 3> flip{false, false, false};
};

// The nearest axis-aligned reorientation for a direction matrix (oblique scans snap to the
// closest axes; nothing is resampled).
Reorientation canonical_reorientation(const io::Geometry& geometry);

// A volume (or 2D image, as one slice) in canonical orientation, normalised, ready to slice.
struct PreparedVolume {
  torch::Tensor image;    // [C, Z, Y, X] float32 in [0, 1], canonical axes
  torch::Tensor labels;   // [Z, Y, X] int32, canonical; undefined when no labels were given
  std::array<double, 3> spacing{1, 1, 1};  // canonical x, y, z spacing (mm)
  int through_axis = 2;   // canonical axis sliced along (2 = z); 2 for 2D images
  Reorientation reorientation;
  std::array<int64_t, 3> source_size{0, 0, 0};  // x, y, z of the file's grid
  int dims = 3;

  int64_t num_slices() const;
  // Rows and columns of one plane before resizing.
  std::pair<int64_t, int64_t> plane_shape() const;
};

// Converts an image (and optional labels on the same grid) to a PreparedVolume. `modality` is the
// dataset's or user's modality string (only "CT" changes the behaviour). Throws DataError for an
// image whose intensities are constant (nothing to normalise) only if `strict`.
PreparedVolume prepare(const io::Volume& image, const io::LabelMap* labels,
                       const std::string& modality, const PreprocessOptions& options);

// The canonical axis to slice along: the coarsest spacing when it is clearly coarser (>= 1.25x
// every other axis); otherwise (near-isotropic, or spacing unknown) the axis with the fewest
// voxels, ties to the last axis. 2D images: 2.
int through_plane_axis(const std::array<double, 3>& canonical_spacing, const std::array<int64_t, 3>& canonical_size,
                       bool spacing_known, int dims);

// One plane at model resolution. Image: [C, R, R] float (area/bilinear resize); labels: [R, R]
// int32 (nearest). Planes are padded to a square (centred, zeros) before resizing, so anatomy
// keeps its aspect ratio.
torch::Tensor image_plane(const PreparedVolume& volume, int64_t index, int resolution);
torch::Tensor label_plane(const PreparedVolume& volume, int64_t index, int resolution);

// Inverse of the plane mapping for model outputs: `planes` [N, R, R] float (probabilities or
// variances) for every slice in order -> a float volume on the file's original grid, x fastest
// ([Z, Y, X] in source index order), via bilinear resize back and un-padding.
torch::Tensor planes_to_source_grid(const torch::Tensor& planes, const PreparedVolume& volume);

// Wraps a source-grid float tensor [Z, Y, X] as a LabelMap (value > threshold -> 1) or a float
// Volume with the geometry of `reference`.
io::LabelMap to_label_map(const torch::Tensor& source_grid, const io::Geometry& geometry, int dims,
                          double threshold);
io::Volume to_volume(const torch::Tensor& source_grid, const io::Geometry& geometry, int dims);

// RGB [3, ...] -> luminance [1, ...] (BT.601 weights); other channel counts pass through.
torch::Tensor to_luminance(const torch::Tensor& image);

}  // namespace segicl::data
