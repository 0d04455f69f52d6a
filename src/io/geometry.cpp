// Format-independent parts of the io library: grid comparison and the image/label pairing check.
// Built both with and without ITK; it never decodes a file itself.
#include <cmath>
#include <sstream>
#include <string>

#include "segicl/core/error.h"
#include "segicl/io/volume.h"

namespace segicl::io {
namespace {

template <size_t N>
std::string format_array(const std::array<double, N>& values) {
  std::ostringstream out;
  out.precision(6);
  out << "(";
  for (size_t i = 0; i < N; ++i) out << (i ? ", " : "") << values[i];
  out << ")";
  return out.str();
}

std::string format_size(const std::array<int64_t, 3>& size) {
  return std::to_string(size[0]) + "x" + std::to_string(size[1]) + "x" + std::to_string(size[2]);
}

// Name of the first field where the two grids differ, with both values; empty when they agree.
std::string grid_difference(int dims_a, const std::array<int64_t, 3>& size_a, const Geometry& a,
                            int dims_b, const std::array<int64_t, 3>& size_b, const Geometry& b,
                            double tolerance) {
  if (size_a != size_b) return "size " + format_size(size_a) + " vs " + format_size(size_b);
  if (dims_a != dims_b) {
    return "dimension " + std::to_string(dims_a) + "D vs " + std::to_string(dims_b) + "D";
  }
  for (int i = 0; i < 3; ++i) {
    double scale = std::max(std::abs(a.spacing[i]), std::abs(b.spacing[i]));
    if (std::abs(a.spacing[i] - b.spacing[i]) > tolerance * std::max(scale, 1e-12)) {
      return "spacing " + format_array(a.spacing) + " vs " + format_array(b.spacing);
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (std::abs(a.origin[i] - b.origin[i]) > tolerance) {
      return "origin " + format_array(a.origin) + " vs " + format_array(b.origin);
    }
  }
  for (int i = 0; i < 9; ++i) {
    if (std::abs(a.direction[i] - b.direction[i]) > tolerance) {
      return "direction " + format_array(a.direction) + " vs " + format_array(b.direction);
    }
  }
  return {};
}

}  // namespace

bool Geometry::same_as(const Geometry& other, double tolerance) const {
  const std::array<int64_t, 3> size{1, 1, 1};
  return grid_difference(3, size, *this, 3, size, other, tolerance).empty();
}

std::pair<Volume, LabelMap> read_image_and_labels(const std::string& image_path,
                                                  const std::string& label_path) {
  Volume image = read_image(image_path);
  LabelMap labels = read_labels(label_path);
  // Spacing written as float32 by NIfTI and re-read may differ in the 7th digit; 1e-4 mm/relative
  // is far below any voxel size and above float rounding.
  std::string diff = grid_difference(image.dims, image.size, image.geometry, labels.dims,
                                     labels.size, labels.geometry, 1e-4);
  if (!diff.empty()) {
    SEGICL_THROW(DataError,
                 "image and label map are on different grids (" + diff + "): image " + image_path +
                     ", labels " + label_path,
                 label_path,
                 "resample the label map onto the image grid, or check that the two files belong "
                 "to the same case");
  }
  return {std::move(image), std::move(labels)};
}

}  // namespace segicl::io
