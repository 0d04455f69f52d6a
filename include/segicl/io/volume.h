// segicl's image types and readers/writers for medical images: 2D PNG/JPEG/BMP/TIFF, 3D NIfTI
// (.nii/.nii.gz), MHA/MHD, NRRD and DICOM series directories. ITK does the decoding inside
// src/io; nothing of ITK leaks through this header. Not a resampler or viewer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace segicl::io {

// Physical placement of a voxel grid, in ITK's LPS world convention: world = origin +
// direction * (index * spacing). direction is row-major 3x3. 2D images use the first two axes.
struct Geometry {
  std::array<double, 3> spacing{1.0, 1.0, 1.0};  // mm per voxel along x, y, z
  std::array<double, 3> origin{0.0, 0.0, 0.0};   // mm, world position of voxel (0,0,0)
  std::array<double, 9> direction{1, 0, 0, 0, 1, 0, 0, 0, 1};
  bool spacing_known = true;  // false for 2D formats that carry no physical spacing (PNG, JPEG)

  // Same grid within `tolerance` (relative for spacing, mm for origin, absolute for direction).
  bool same_as(const Geometry& other, double tolerance = 1e-4) const;
};

// An intensity image. Voxels are stored x fastest, then y, then z, with `channels` interleaved
// per voxel (RGB = 3): index = ((z * size[1] + y) * size[0] + x) * channels + c.
struct Volume {
  int dims = 3;                       // 2 for a plane (size[2] == 1), 3 for a volume
  std::array<int64_t, 3> size{0, 0, 0};  // x, y, z voxel counts
  int channels = 1;
  std::vector<float> voxels;
  Geometry geometry;

  int64_t num_voxels() const { return size[0] * size[1] * size[2]; }
};

// A label map on a voxel grid, same layout as Volume with one channel. 0 is background.
struct LabelMap {
  int dims = 3;
  std::array<int64_t, 3> size{0, 0, 0};
  std::vector<uint16_t> labels;
  Geometry geometry;

  int64_t num_voxels() const { return size[0] * size[1] * size[2]; }
};

// Reads an image. Path is a file (.png .jpg .jpeg .bmp .tif .tiff .nii .nii.gz .mha .mhd .nrrd
// .nhdr .dcm) or a directory holding one DICOM series. RGB stays 3 channels; other multi-channel
// pixels are refused. Throws IoError (missing, unknown extension, unreadable/truncated) or
// DataError (4D, zero-size, NaN/Inf intensities), each naming the path with a hint. NIfTI and MHA
// files are checked for truncation before decoding (ITK would zero-fill the missing tail).
// 2D formats give dims == 2 and spacing_known == false; a 3D file with one slice stays dims == 3.
// Safe to call concurrently on different paths.
Volume read_image(const std::string& path);

// Reads a label map: integer-valued voxels in [0, 65535]. Throws as read_image, plus DataError for
// non-integer or negative values and for RGB labels.
LabelMap read_labels(const std::string& path);

// Reads an image and its label map and checks they share a grid (size, spacing, origin,
// direction); DataError naming both files otherwise.
std::pair<Volume, LabelMap> read_image_and_labels(const std::string& image_path,
                                                  const std::string& label_path);

// Writes a label map atomically. The format follows the extension: NIfTI (.nii/.nii.gz), MHA,
// NRRD keep the full geometry; PNG (2D only, values must fit 8 bits) keeps none. IoError on
// failure or for any other extension (JPEG/BMP/TIFF/MHD are read-only); DataError for a PNG label
// above 255, a 3D map to PNG, or a buffer that does not match `size`. Stored as uint8 when every
// label fits, else uint16. A 2D map (dims == 2) is written as a 2D image, read back as dims == 2.
void write_labels(const LabelMap& labels, const std::string& path);

// Writes an image atomically (float32 for NIfTI/MHA/NRRD; PNG is 8-bit, values clamped to
// [0, 255] after rounding). Used for probability and uncertainty maps and overlays. channels must
// be 1 or 3. Same extensions and errors as write_labels.
void write_image(const Volume& image, const std::string& path);

// True when this build can read and write files (false when built with SEGICL_WITH_ITK=OFF).
bool available();

}  // namespace segicl::io
