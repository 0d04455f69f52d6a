// Tests for segicl::io: round trips through every writable format, hand-made broken files and an
// independent reader (nibabel). Files are written into a per-test temp folder; nothing is fetched.
#include "segicl/io/volume.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"

namespace segicl::io {
namespace {
namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Non-trivial geometry: rotated 30° about z, anisotropic spacing, non-zero origin.
Geometry oblique_geometry() {
  Geometry g;
  const double c = std::cos(M_PI / 6), s = std::sin(M_PI / 6);
  g.spacing = {0.7, 1.3, 3.0};
  g.origin = {-12.5, 40.25, 7.0};
  g.direction = {c, -s, 0, s, c, 0, 0, 0, 1};
  return g;
}

LabelMap make_labels(std::array<int64_t, 3> size, int dims = 3, uint16_t modulo = 5) {
  LabelMap labels;
  labels.dims = dims;
  labels.size = size;
  labels.geometry = oblique_geometry();
  labels.labels.resize(static_cast<size_t>(labels.num_voxels()));
  for (size_t i = 0; i < labels.labels.size(); ++i) labels.labels[i] = (i * 7 + i / 3) % modulo;
  return labels;
}

Volume make_volume(std::array<int64_t, 3> size, int dims = 3, int channels = 1) {
  Volume volume;
  volume.dims = dims;
  volume.size = size;
  volume.channels = channels;
  volume.geometry = oblique_geometry();
  volume.voxels.resize(static_cast<size_t>(volume.num_voxels() * channels));
  for (size_t i = 0; i < volume.voxels.size(); ++i) volume.voxels[i] = (i % 251) * 1.5f - 20.0f;
  return volume;
}

void expect_same_geometry(const Geometry& a, const Geometry& b, int dims, double tol = 1e-5) {
  for (int i = 0; i < dims; ++i) {
    EXPECT_NEAR(a.spacing[i], b.spacing[i], tol) << "spacing " << i;
    EXPECT_NEAR(a.origin[i], b.origin[i], tol) << "origin " << i;
    for (int j = 0; j < dims; ++j) {
      EXPECT_NEAR(a.direction[i * 3 + j], b.direction[i * 3 + j], tol) << "direction " << i << j;
    }
  }
}

// A minimal NIfTI-1 single file (.nii): 348-byte header, 4 bytes of extension flags, then data.
void write_raw_nifti(const std::string& path, std::array<int16_t, 8> dim, int16_t datatype,
                     int16_t bitpix, const std::string& payload) {
  std::string header(352, '\0');
  auto put = [&](size_t offset, const auto& value) {
    std::memcpy(&header[offset], &value, sizeof(value));
  };
  put(0, int32_t{348});
  for (int i = 0; i < 8; ++i) put(40 + 2 * i, dim[i]);
  put(70, datatype);
  put(72, bitpix);
  for (int i = 0; i < 8; ++i) put(76 + 4 * i, 1.0f);
  put(108, 352.0f);  // vox_offset
  std::memcpy(&header[344], "n+1\0", 4);
  std::ofstream out(path, std::ios::binary);
  out << header << payload;
}

// write_raw_nifti's 2x2x2 int16 image with sform_code 2 (an sform that ITK's orientation code
// reads), its header bytes then edited by `patch` (offsets as in nifti1.h). Returns `path`.
std::string write_sform_nifti(const std::string& path,
                              const std::function<void(std::string&)>& patch) {
  write_raw_nifti(path, {3, 2, 2, 2, 1, 1, 1, 1}, 4, 16, std::string(16, '\0'));
  std::string bytes = read_file(path);
  const int16_t sform_code = 2;
  std::memcpy(&bytes[254], &sform_code, 2);
  patch(bytes);
  write_file_atomic(path, bytes);
  return path;
}

class VolumeIo : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("segicl_io_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
    // Built with SEGICL_WITH_ITK=OFF: only the stub test below applies.
    if (!available()) GTEST_SKIP() << "segicl_io built without ITK";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST(VolumeIoStub, WithoutItkEveryCallIsIoErrorWithRebuildHint) {
  if (available()) GTEST_SKIP() << "this build has ITK";
  try {
    read_image("/nonexistent.nii.gz");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.hint(), "SEGICL_WITH_ITK=ON")) << e.hint();
  }
  EXPECT_THROW(write_labels(LabelMap{}, "/tmp/x.nii.gz"), IoError);
}

TEST_F(VolumeIo, LabelGeometrySurvivesNiftiMhaAndNrrdFieldByField) {
  const LabelMap labels = make_labels({9, 7, 5});
  for (const char* ext : {".nii.gz", ".nii", ".mha", ".nrrd"}) {
    SCOPED_TRACE(ext);
    const std::string file = path(std::string("labels") + ext);
    write_labels(labels, file);
    LabelMap back = read_labels(file);
    EXPECT_EQ(back.dims, 3);
    EXPECT_EQ(back.size, labels.size);
    EXPECT_EQ(back.labels, labels.labels);
    EXPECT_TRUE(back.geometry.spacing_known);
    // NIfTI stores the geometry as float32: 1e-5 mm is well above its rounding at these values.
    expect_same_geometry(back.geometry, labels.geometry, 3);
    EXPECT_TRUE(back.geometry.same_as(labels.geometry));
  }
}

TEST_F(VolumeIo, FloatImageRoundTripsExactly) {
  const Volume image = make_volume({6, 5, 4});
  for (const char* ext : {".nii.gz", ".mha", ".nrrd"}) {
    SCOPED_TRACE(ext);
    write_image(image, path(std::string("image") + ext));
    Volume back = read_image(path(std::string("image") + ext));
    EXPECT_EQ(back.size, image.size);
    EXPECT_EQ(back.channels, 1);
    EXPECT_EQ(back.voxels, image.voxels);
    expect_same_geometry(back.geometry, image.geometry, 3);
  }
}

TEST_F(VolumeIo, SingleSliceVolumeStaysThreeDimensional) {
  LabelMap labels = make_labels({8, 6, 1});
  write_labels(labels, path("slab.nii.gz"));
  LabelMap back = read_labels(path("slab.nii.gz"));
  EXPECT_EQ(back.dims, 3);
  EXPECT_EQ(back.size, labels.size);
}

TEST_F(VolumeIo, TwoDimensionalLabelsRoundTripThroughPngWithoutSpacing) {
  LabelMap labels = make_labels({11, 7, 1}, 2, 200);
  write_labels(labels, path("mask.png"));
  LabelMap back = read_labels(path("mask.png"));
  EXPECT_EQ(back.dims, 2);
  EXPECT_EQ(back.size, (std::array<int64_t, 3>{11, 7, 1}));
  EXPECT_EQ(back.labels, labels.labels);
  EXPECT_FALSE(back.geometry.spacing_known);
}

TEST_F(VolumeIo, TwoDimensionalLabelsKeepSpacingInNifti) {
  LabelMap labels = make_labels({11, 7, 1}, 2);
  write_labels(labels, path("mask.nii.gz"));
  LabelMap back = read_labels(path("mask.nii.gz"));
  EXPECT_EQ(back.dims, 2);
  EXPECT_EQ(back.size[2], 1);
  EXPECT_EQ(back.labels, labels.labels);
  EXPECT_TRUE(back.geometry.spacing_known);
  expect_same_geometry(back.geometry, labels.geometry, 2);
}

TEST_F(VolumeIo, RgbPngImageKeepsThreeChannelsAndClampsToBytes) {
  Volume image = make_volume({5, 4, 1}, 2, 3);
  image.voxels[0] = -7.0f;   // clamps to 0
  image.voxels[1] = 300.0f;  // clamps to 255
  image.voxels[2] = 12.6f;   // rounds to 13
  write_image(image, path("photo.png"));
  Volume back = read_image(path("photo.png"));
  EXPECT_EQ(back.dims, 2);
  EXPECT_EQ(back.channels, 3);
  ASSERT_EQ(back.voxels.size(), image.voxels.size());
  EXPECT_EQ(back.voxels[0], 0.0f);
  EXPECT_EQ(back.voxels[1], 255.0f);
  EXPECT_EQ(back.voxels[2], 13.0f);
  EXPECT_FALSE(back.geometry.spacing_known);
}

TEST_F(VolumeIo, PngLabelAbove255IsDataError) {
  LabelMap labels = make_labels({4, 4, 1}, 2);
  labels.labels[3] = 256;
  EXPECT_THROW(write_labels(labels, path("big.png")), DataError);
  EXPECT_FALSE(fs::exists(path("big.png")));
}

TEST_F(VolumeIo, UnwritableExtensionIsIoErrorAndLeavesNoFile) {
  EXPECT_THROW(write_labels(make_labels({4, 4, 1}, 2), path("mask.jpg")), IoError);
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(VolumeIo, MissingFileIsIoErrorSayingNotFound) {
  try {
    read_image(path("absent.nii.gz"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), "file not found")) << e.message();
    EXPECT_TRUE(contains(e.file(), "absent.nii.gz"));
  }
}

TEST_F(VolumeIo, UnknownExtensionIsIoErrorListingSupportedOnes) {
  write_file_atomic(path("scan.xyz"), "whatever");
  try {
    read_image(path("scan.xyz"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), ".xyz")) << e.message();
    EXPECT_TRUE(contains(e.message(), ".nii.gz")) << e.message();
    EXPECT_TRUE(contains(e.message(), ".png")) << e.message();
  }
}

void expect_corrupt(const std::string& file) {
  try {
    read_image(file);
    FAIL() << "expected IoError for " << file;
  } catch (const IoError& e) {
    EXPECT_EQ(e.file(), file);
    EXPECT_TRUE(contains(e.hint(), "truncated or corrupt")) << e.message() << " / " << e.hint();
  }
}

TEST_F(VolumeIo, RandomBytesNamedPngAreCorrupt) {
  std::mt19937 rng(3);
  std::string bytes(2000, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  write_file_atomic(path("noise.png"), bytes);
  expect_corrupt(path("noise.png"));
}

TEST_F(VolumeIo, TextFileNamedNiiIsCorrupt) {
  write_file_atomic(path("notes.nii"), "this is not a NIfTI file, just some text\n");
  expect_corrupt(path("notes.nii"));
}

TEST_F(VolumeIo, TruncatedFilesAreCorrupt) {
  Volume image = make_volume({32, 32, 16});
  std::mt19937 rng(5);  // random values, so gzip cannot shrink the data to nothing
  for (float& v : image.voxels) v = static_cast<float>(rng() % 1000);
  for (const char* name : {"cut.nii.gz", "cut.nii", "cut.mha", "cut.nrrd"}) {
    SCOPED_TRACE(name);
    write_image(image, path(name));
    std::string bytes = read_file(path(name));
    write_file_atomic(path(name), bytes.substr(0, bytes.size() / 2));
    expect_corrupt(path(name));
  }
}

TEST_F(VolumeIo, FourDimensionalNiftiIsDataErrorWithSplitHint) {
  write_raw_nifti(path("series.nii"), {4, 2, 2, 2, 3, 1, 1, 1}, /*int16*/ 4, 16,
                  std::string(2 * 2 * 2 * 3 * 2, '\0'));
  try {
    read_image(path("series.nii"));
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.message(), "4D image (3 time points)")) << e.message();
    EXPECT_TRUE(contains(e.hint(), "split")) << e.hint();
  }
}

TEST_F(VolumeIo, HandWrittenThreeDimensionalNiftiReads) {
  // Guards the hand-made header above: with dim[0] = 3 the same bytes are a valid image.
  std::string payload(2 * 3 * 4 * 2, '\0');
  payload[2] = 9;  // int16 voxel 1 = 9
  write_raw_nifti(path("small.nii"), {3, 2, 3, 4, 1, 1, 1, 1}, 4, 16, payload);
  Volume image = read_image(path("small.nii"));
  EXPECT_EQ(image.size, (std::array<int64_t, 3>{2, 3, 4}));
  EXPECT_EQ(image.voxels[1], 9.0f);
}

TEST_F(VolumeIo, ZeroSizeImageIsDataError) {
  write_raw_nifti(path("empty.nii"), {3, 4, 4, 0, 1, 1, 1, 1}, 4, 16, "");
  EXPECT_THROW(read_image(path("empty.nii")), DataError);
}

TEST_F(VolumeIo, NanIntensitiesAreDataErrorWithCount) {
  Volume image = make_volume({4, 4, 2});
  image.voxels[3] = std::numeric_limits<float>::quiet_NaN();
  image.voxels[9] = std::numeric_limits<float>::infinity();
  write_image(image, path("nan.nii.gz"));
  try {
    read_image(path("nan.nii.gz"));
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.message(), "2 NaN/Inf")) << e.message();
    EXPECT_TRUE(contains(e.message(), "nan.nii.gz")) << e.message();
  }
}

TEST_F(VolumeIo, NonIntegerNegativeAndRgbLabelsAreDataErrors) {
  Volume image = make_volume({4, 4, 2});
  image.voxels.assign(image.voxels.size(), 1.0f);
  image.voxels[5] = 1.5f;
  write_image(image, path("fraction.nii.gz"));
  EXPECT_THROW(read_labels(path("fraction.nii.gz")), DataError);

  image.voxels[5] = -1.0f;
  write_image(image, path("negative.nii.gz"));
  EXPECT_THROW(read_labels(path("negative.nii.gz")), DataError);

  write_image(make_volume({4, 4, 1}, 2, 3), path("rgb.png"));
  try {
    read_labels(path("rgb.png"));
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.message(), "RGB")) << e.message();
  }
}

TEST_F(VolumeIo, MatchingImageAndLabelsReadTogether) {
  write_image(make_volume({6, 5, 4}), path("img.nii.gz"));
  write_labels(make_labels({6, 5, 4}), path("lab.nii.gz"));
  auto [image, labels] = read_image_and_labels(path("img.nii.gz"), path("lab.nii.gz"));
  EXPECT_EQ(image.size, labels.size);
}

TEST_F(VolumeIo, GridMismatchIsDataErrorNamingBothFilesAndTheField) {
  write_image(make_volume({6, 5, 4}), path("img.nii.gz"));
  LabelMap labels = make_labels({6, 5, 4});
  labels.geometry.spacing[2] = 2.5;
  write_labels(labels, path("lab.nii.gz"));
  try {
    read_image_and_labels(path("img.nii.gz"), path("lab.nii.gz"));
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.message(), "spacing")) << e.message();
    EXPECT_TRUE(contains(e.message(), "img.nii.gz")) << e.message();
    EXPECT_TRUE(contains(e.message(), "lab.nii.gz")) << e.message();
  }
  write_labels(make_labels({6, 5, 3}), path("short.nii.gz"));
  try {
    read_image_and_labels(path("img.nii.gz"), path("short.nii.gz"));
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.message(), "size 6x5x4 vs 6x5x3")) << e.message();
  }
}

TEST_F(VolumeIo, DirectoryWithoutDicomIsIoError) {
  fs::create_directories(dir_ / "series");
  write_file_atomic(path("series/readme.txt"), "no dicom here");
  try {
    read_image(path("series"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), "no DICOM series")) << e.message();
  }
}

// nibabel is an independent NIfTI implementation: same shape, voxels and affine means our files
// are read the same way by the Python tools users will open them with.
TEST_F(VolumeIo, NiftiLabelsReadTheSameInNibabel) {
  if (std::system("/usr/bin/python3 -c 'import nibabel' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "nibabel not installed (python3-nibabel)";
  }
  const LabelMap labels = make_labels({9, 7, 5});
  const std::string file = path("for_nibabel.nii.gz");
  write_labels(labels, file);
  const std::vector<std::array<int64_t, 3>> probes{{0, 0, 0}, {8, 6, 4}, {3, 2, 1}, {5, 0, 3}};
  std::string script =
      "import sys, nibabel as nib\n"
      "img = nib.load(sys.argv[1]); d = img.get_fdata()\n"
      "print(*d.shape)\n"
      "for i, j, k in [(0,0,0), (8,6,4), (3,2,1), (5,0,3)]: print(int(d[i, j, k]))\n"
      "print(*img.affine.flatten().tolist())\n";
  write_file_atomic(path("probe.py"), script);
  std::string command = "/usr/bin/python3 " + path("probe.py") + " " + file;
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe)) output += buffer;
  ASSERT_EQ(::pclose(pipe), 0) << output;

  std::istringstream in(output);
  std::array<int64_t, 3> shape{};
  in >> shape[0] >> shape[1] >> shape[2];
  EXPECT_EQ(shape, labels.size);
  for (const auto& p : probes) {
    int value = -1;
    in >> value;
    EXPECT_EQ(value, labels.labels[(p[2] * labels.size[1] + p[1]) * labels.size[0] + p[0]]);
  }
  double affine[16];
  for (double& a : affine) in >> a;
  ASSERT_FALSE(in.fail()) << output;
  // nibabel's RAS affine = diag(-1, -1, 1) * ITK's LPS affine [direction * diag(spacing) | origin].
  const Geometry& g = labels.geometry;
  for (int r = 0; r < 3; ++r) {
    const double flip = r < 2 ? -1.0 : 1.0;
    for (int c = 0; c < 3; ++c) {
      EXPECT_NEAR(affine[r * 4 + c], flip * g.direction[r * 3 + c] * g.spacing[c], 1e-5)
          << "affine " << r << c;
    }
    EXPECT_NEAR(affine[r * 4 + 3], flip * g.origin[r], 1e-4) << "affine translation " << r;
  }
}

// A real case from the shared datasets (../shared/data or $SEGICL_DATA), when present.
TEST_F(VolumeIo, ReadsARealChaosCase) {
  fs::path root;
  if (const char* env = std::getenv("SEGICL_DATA")) {
    root = env;
  } else {
    root = fs::path(SEGICL_SOURCE_DIR) / ".." / "shared" / "data";
  }
  const fs::path images = root / "chaos_mr_t2" / "images";
  if (!fs::is_directory(images)) GTEST_SKIP() << "no dataset at " << images;
  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(images)) cases.push_back(entry.path());
  if (cases.empty()) GTEST_SKIP() << "no cases in " << images;
  std::sort(cases.begin(), cases.end());
  const fs::path label = root / "chaos_mr_t2" / "labels" / cases.front().filename();

  auto [image, labels] = read_image_and_labels(cases.front().string(), label.string());
  EXPECT_EQ(image.dims, 3);
  EXPECT_EQ(image.channels, 1);
  for (double s : image.geometry.spacing) {
    EXPECT_GT(s, 0.1);
    EXPECT_LT(s, 20.0);
  }
  uint16_t max_label = 0;
  for (uint16_t v : labels.labels) max_label = std::max(max_label, v);
  EXPECT_GE(max_label, 1);
  EXPECT_LE(max_label, 4);
}

// ---- Findings of the fuzz targets (fuzz/README.md); inputs kept in fuzz/regressions/ ----

std::string regression(const std::string& name) {
  return (fs::path(SEGICL_SOURCE_DIR) / "fuzz" / "regressions" / name).string();
}

TEST_F(VolumeIo, NiftiWithAHugeVoxOffsetIsCorruptNotAHugeAllocation) {
  // fuzz_nifti: vox_offset 1.3e13 made the integrity scan allocate a 13 TB skip buffer.
  expect_corrupt(regression("nifti-huge-vox-offset.nii"));
}

TEST_F(VolumeIo, NiftiWithANanVoxOffsetIsCorrupt) {
  write_raw_nifti(path("nan_offset.nii"), {3, 2, 2, 2, 1, 1, 1, 1}, 4, 16, std::string(16, '\0'));
  std::string bytes = read_file(path("nan_offset.nii"));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&bytes[108], &nan, sizeof nan);
  write_file_atomic(path("nan_offset.nii"), bytes);
  expect_corrupt(path("nan_offset.nii"));
}

TEST_F(VolumeIo, NiftiWhoseSizesOverflowIsCorrupt) {
  // 32767^7 voxels: the product of the header's sizes overflowed int64 in the integrity scan.
  write_raw_nifti(path("huge.nii"), {7, 32767, 32767, 32767, 32767, 32767, 32767, 32767}, 4, 16,
                  std::string(64, '\0'));
  expect_corrupt(path("huge.nii"));
}

TEST_F(VolumeIo, MhaWhoseDataFileIsElsewhereIsRefused) {
  // fuzz_meta: ElementDataFile pointing at another file made MetaIO read it (and leak); through
  // an upload, any path the server can open. The input is kept as fuzz_meta found it (its header
  // is now refused earlier, for "CompressedData = Truc").
  expect_corrupt(regression("mha-data-file-not-local.mha"));
  for (const char* data_file : {"/dev/zero", "other.raw"}) {
    const std::string file = path("elsewhere.mha");
    SCOPED_TRACE(data_file);
    write_file_atomic(file, std::string("ObjectType = Image\nNDims = 2\nDimSize = 4 4\n"
                                        "ElementType = MET_UCHAR\nElementDataFile = ") + data_file + "\n");
    try {
      read_image(file);
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_EQ(e.file(), file);
      EXPECT_TRUE(contains(e.message(), "does not hold its data")) << e.message();
      EXPECT_TRUE(contains(e.hint(), ".mhd")) << e.hint();
    }
  }
}

TEST_F(VolumeIo, MhaWithAKeyLongerThanMetaIoCanHoldIsRefused) {
  // fuzz_meta: a 361-byte key overflowed MetaIO's 255-byte field name (strcpy; glibc's fortify
  // check aborted the process).
  expect_corrupt(regression("mha-long-key-overflows-metaio.mha"));
}

TEST_F(VolumeIo, MhaWithANegativeNDimsIsRefused) {
  // fuzz_meta: NDims = -10 made MetaIO's header reader loop without end.
  expect_corrupt(regression("mha-negative-ndims-hangs-metaio.mha"));
  // A corrupt NRRD on which NrrdIO leaks (tests/sanitizer/lsan.supp) still fails cleanly.
  expect_corrupt(regression("nrrd-itk-leaks-on-error.nrrd"));
}

TEST_F(VolumeIo, MhaWithANegativeCompressedDataSizeIsRefused) {
  // fuzz_meta: CompressedDataSize = -10 made MetaIO allocate 2^64 - 10 bytes.
  expect_corrupt(regression("mha-negative-compressed-size.mha"));
  // An unknown, corrupt key on which MetaIO leaks a field record (tests/sanitizer/lsan.supp)
  // still fails cleanly.
  expect_corrupt(regression("mha-bad-key-metaio-leaks.mha"));
}

TEST_F(VolumeIo, MhaWhoseZlibStreamAsksForADictionaryIsCorruptNotAHang) {
  // fuzz_meta: a zlib header with the preset-dictionary flag made MetaIO's inflate loop spin for
  // ever (inflate answers Z_NEED_DICT, which MetaIO neither accepts nor treats as an error).
  expect_corrupt(regression("mha-zlib-preset-dictionary-hangs-metaio.mha"));
  // The same flag set on a file our writer made (zlib header "x " = 0x78 0x20 is valid).
  Volume image = make_volume({8, 6, 4});
  write_image(image, path("ok.mha"));
  std::string bytes = read_file(path("ok.mha"));
  const std::string last_header_line = "ElementDataFile = LOCAL\n";
  const size_t data = bytes.find(last_header_line) + last_header_line.size();
  ASSERT_EQ(static_cast<unsigned char>(bytes[data]), 0x78u) << "our .mha writer stopped compressing";
  EXPECT_EQ(read_image(path("ok.mha")).voxels, image.voxels);
  bytes[data + 1] = 0x20;
  write_file_atomic(path("dictionary.mha"), bytes);
  expect_corrupt(path("dictionary.mha"));
  try {
    read_image(path("dictionary.mha"));
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), "preset dictionary")) << e.message();
  }
}

TEST_F(VolumeIo, MhaHeadersMetaIoWouldMisreadAreRefused) {
  // fuzz_meta: a header with NDims twice, a malformed BinaryData line and no ElementDataFile line
  // made MetaIO write past the buffer ITK had sized (heap corruption, seen under valgrind).
  expect_corrupt(regression("mha-malformed-header-metaio-overflows.mha"));
  const std::string good = "ObjectType = Image\nNDims = 2\nDimSize = 2 2\nElementType = MET_UCHAR\n";
  const std::pair<const char*, std::string> cases[] = {
      {"no ElementDataFile line", good},
      {"appears twice", "NDims = 2\n" + good + "ElementDataFile = LOCAL\n"},
      {"DimSize holds 3 values", "ObjectType = Image\nNDims = 2\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                                 "ElementDataFile = LOCAL\n"},
      {"comes before NDims", "DimSize = 2 2\nNDims = 2\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"},
      {"is not 'Key = Value'", "ObjectType = Image\nNDims 2\nElementDataFile = LOCAL\n"},
      {"ElementSpacing holds 'nan'", good + "ElementSpacing = nan 1\nElementDataFile = LOCAL\n"},
      {"unknown ElementType", "NDims = 2\nDimSize = 2 2\nElementType = MET_WHAT\nElementDataFile = LOCAL\n"},
  };
  for (const auto& [message, header] : cases) {
    SCOPED_TRACE(message);
    write_file_atomic(path("bad.mha"), header);
    try {
      read_image(path("bad.mha"));
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_TRUE(contains(e.message(), message)) << e.message();
      EXPECT_TRUE(contains(e.hint(), "truncated or corrupt")) << e.hint();
    }
  }
}

TEST_F(VolumeIo, NrrdWhoseDataFileIsElsewhereIsRefused) {
  for (const char* field : {"data file: /dev/zero", "datafile: other.raw", "Data File: x.raw"}) {
    SCOPED_TRACE(field);
    write_file_atomic(path("detached.nrrd"), std::string("NRRD0004\ntype: uchar\ndimension: 2\n"
                                                         "sizes: 4 4\nencoding: raw\n") +
                                                 field + "\n\n");
    try {
      read_image(path("detached.nrrd"));
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_TRUE(contains(e.message(), "does not hold its data")) << e.message();
      EXPECT_TRUE(contains(e.hint(), ".nhdr")) << e.hint();
    }
  }
}

TEST_F(VolumeIo, SingleFileMhaAndNrrdStillRead) {
  // The data-file check must not refuse the files our own writer makes.
  const LabelMap labels = make_labels({5, 4, 3});
  for (const char* name : {"ok.mha", "ok.nrrd"}) {
    SCOPED_TRACE(name);
    write_labels(labels, path(name));
    EXPECT_EQ(read_labels(path(name)).labels, labels.labels);
  }
}

TEST_F(VolumeIo, PngThatLibpngRejectsIsCorruptNotAnAbort) {
  // fuzz_image2d: a PLTE chunk with a bad length made libpng call abort() inside ITK 5.2's PNG
  // reader (it sets no setjmp), killing the process. Other broken chunks, same path.
  expect_corrupt(regression("png-bad-chunk-aborts-libpng.png"));
  write_labels(make_labels({6, 5, 1}, 2), path("ok.png"));
  std::string bytes = read_file(path("ok.png"));
  bytes[bytes.size() - 20] ^= 0x40;  // inside IDAT: a CRC (or zlib) error
  write_file_atomic(path("flipped.png"), bytes);
  expect_corrupt(path("flipped.png"));
  EXPECT_EQ(read_labels(path("ok.png")).size, (std::array<int64_t, 3>{6, 5, 1}));
}

TEST_F(VolumeIo, SmallFileClaimingAHugeImageIsCorruptBeforeAllocation) {
  // 50000 x 50000 bytes (10 GB as floats) claimed by a 10-byte compressed block.
  write_file_atomic(path("bomb.mha"), "ObjectType = Image\nNDims = 2\nDimSize = 50000 50000\n"
                                      "ElementType = MET_UCHAR\nCompressedData = True\n"
                                      "CompressedDataSize = 10\nElementDataFile = LOCAL\n0123456789");
  try {
    read_image(path("bomb.mha"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), "more than the")) << e.message();
  }
}

TEST_F(VolumeIo, CorruptJpegIsCorruptNotACrash) {
  // fuzz_image2d: ITK 5.2's JPEG reader jumped to a wild address on this file (SIGSEGV).
  expect_corrupt(regression("jpeg-corrupt-crashes-itk.jpg"));
}

TEST_F(VolumeIo, TheExtensionDecidesTheReader) {
  // fuzz_nifti: a PNG named .nii went to ITK's PNG reader (picked by content), and so past the
  // NIfTI checks. Now a .nii must be NIfTI.
  expect_corrupt(regression("nii-holding-a-png.nii"));
  write_labels(make_labels({6, 5, 1}, 2), path("real.png"));
  fs::copy_file(path("real.png"), path("png_named.nii"));
  expect_corrupt(path("png_named.nii"));
}

TEST_F(VolumeIo, CorruptTiffIsCorrupt) {
  // fuzz_image2d: ITK leaks a row buffer on this file (suppressed in tests/sanitizer/lsan.supp,
  // see there); the read must still fail cleanly.
  expect_corrupt(regression("tiff-itk-leaks-a-row.tif"));
}

TEST_F(VolumeIo, NiftiWithANanOrientationIsCorruptNotAnAbort) {
  // fuzz_nifti: NaN in srow_y made ITK's orientation code call vnl_svd, which abort()s on it. The
  // input also has sizeof_hdr 604, which nifti1_io accepted (it guesses from dim[0]); now refused.
  expect_corrupt(regression("nifti-nan-sform-aborts-itk.nii"));
  for (int offset : {80 /* pixdim[1] */, 256 /* quatern_b */, 300 /* srow_y[1] */}) {
    SCOPED_TRACE(offset);
    expect_corrupt(write_sform_nifti(path("nan.nii"), [&](std::string& bytes) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(&bytes[offset], &nan, sizeof nan);
    }));
  }
}

TEST_F(VolumeIo, NiftiWithAHugeOrientationIsCorruptNotAHang) {
  // fuzz_nifti: srow_x[1] = -2^127 overflowed inside ITK's vnl_svd<float> to a NaN that LINPACK's
  // ssvdc iterated on without end (a hang, found as a libFuzzer timeout).
  expect_corrupt(regression("nifti-huge-sform-hangs-itk-svd.nii"));
  // The next 10-minute run: bitpix 0 (nifti1_io reads the file anyway) took a NaN quaternion
  // past the checks to vnl_svd's abort().
  expect_corrupt(regression("nifti-bitpix-0-nan-quaternion-aborts-itk.nii"));
  auto sform_nifti = [&](const std::string& name, std::array<float, 12> srow) {
    return write_sform_nifti(path(name), [&](std::string& bytes) {
      std::memcpy(&bytes[280], srow.data(), sizeof srow);
      for (int axis = 0; axis < 3; ++axis) {  // pixdim[1..3]: the column lengths, as writers store
        const float length = std::abs(srow[4 * axis + axis]);
        std::memcpy(&bytes[80 + 4 * axis], &length, sizeof length);
      }
    });
  };
  expect_corrupt(sform_nifti("huge.nii", {-0.5f, -1.7e38f, 0, 1, 0, 0.5f, 0, 2, 0, 0, 3, 3}));
  expect_corrupt(sform_nifti("over.nii", {0.5f, 0, 0, 2e9f, 0, 0.5f, 0, 2, 0, 0, 3, 3}));
  // A plausible sform still reads, with its geometry: 0.5 x 0.5 x 3 mm.
  const Volume ok = read_image(sform_nifti("ok.nii", {0.5f, 0, 0, 300, 0, 0.5f, 0, -20, 0, 0, 3, 7}));
  EXPECT_FLOAT_EQ(ok.geometry.spacing[0], 0.5);
  EXPECT_FLOAT_EQ(ok.geometry.spacing[2], 3.0);
}

TEST_F(VolumeIo, NrrdWithBrokenGzipDataIsCorrupt) {
  // fuzz_meta: NrrdIO leaks ~60 KB (stream and buffers) on gzip data that fails, and its image
  // struct on raw data that runs short; both are checked before ITK reads the data now.
  expect_corrupt(regression("nrrd-bad-gzip-itk-leaks.nrrd"));
  expect_corrupt(regression("nrrd-short-raw-itk-leaks.nrrd"));
  write_labels(make_labels({6, 5, 4}), path("ok.nrrd"));  // our writer compresses: gzip encoding
  std::string bytes = read_file(path("ok.nrrd"));
  write_file_atomic(path("short.nrrd"), bytes.substr(0, bytes.size() - 12));
  expect_corrupt(path("short.nrrd"));
  // fuzz_meta: "encoding: gzip" followed by NULs is gzip to NrrdIO (a C string) but was not to
  // our check, so NrrdIO met the broken stream and leaked. Our check must be the one refusing
  // it, whatever the case of the value or the bytes after a NUL.
  auto expect_our_gzip_check = [&](const std::string& file) {
    try {
      read_image(file);
      FAIL() << "expected IoError for " << file;
    } catch (const IoError& e) {
      EXPECT_TRUE(contains(e.message(), "gzip data yields")) << e.message();
    }
  };
  expect_our_gzip_check(regression("nrrd-gzip-encoding-with-nul-itk-leaks.nrrd"));
  const std::string plain = "encoding: gzip\n";
  const size_t at = bytes.find(plain);
  ASSERT_NE(at, std::string::npos);
  for (const std::string& spelled : {std::string("encoding: GZip\n"),
                                     std::string("encoding: gzip\0\0\xfc\n", 18)}) {
    std::string variant = bytes;
    variant.replace(at, plain.size(), spelled);
    write_file_atomic(path("variant.nrrd"), variant);
    EXPECT_EQ(read_labels(path("variant.nrrd")).labels, make_labels({6, 5, 4}).labels);
    write_file_atomic(path("variant.nrrd"), variant.substr(0, variant.size() - 12));
    expect_our_gzip_check(path("variant.nrrd"));
  }
}

TEST_F(VolumeIo, TiffWhoseDirectoryChainLoopsIsCorruptNotAHang) {
  // fuzz_image2d: ITK's libtiff never returned from counting the directories of this file.
  expect_corrupt(regression("tiff-ifd-loop-hangs-libtiff.tif"));
  // The same in a hand-made file: one directory whose "next" offset points at itself.
  std::string tiff("II*\0\x08\0\0\0\0\0\x08\0\0\0", 14);
  write_file_atomic(path("loop.tif"), tiff);
  expect_corrupt(path("loop.tif"));
}

// A classic little-endian TIFF with the given directory entries (tag, type, count, value or
// offset) and 8x8 8-bit pixels after the directory; StripOffsets is filled in.
std::string hand_made_tiff(std::vector<std::array<uint32_t, 4>> entries) {
  auto put = [](std::string& out, uint32_t value, int size) {
    for (int i = 0; i < size; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  std::string out("II*\0\x08\0\0\0", 8);
  const uint32_t pixels_at = 8 + 2 + 12 * static_cast<uint32_t>(entries.size()) + 4;
  put(out, static_cast<uint32_t>(entries.size()), 2);
  for (auto [tag, type, count, value] : entries) {
    put(out, tag, 2);
    put(out, type, 2);
    put(out, count, 4);
    put(out, tag == 273 ? pixels_at : value, type == 3 && count == 1 ? 2 : 4);
    if (type == 3 && count == 1) put(out, 0, 2);
  }
  put(out, 0, 4);
  return out + std::string(64, '\x40');
}

const std::vector<std::array<uint32_t, 4>> kPlainTiff{
    {256, 3, 1, 8}, {257, 3, 1, 8}, {258, 3, 1, 8}, {259, 3, 1, 1}, {262, 3, 1, 1},
    {273, 4, 1, 0}, {277, 3, 1, 1}, {278, 3, 1, 8}, {279, 4, 1, 64}};

TEST_F(VolumeIo, TiffFilesOfOtherWritersRead) {
  // The TIFF seeds of fuzz_image2d come from Pillow (strips, LZW, deflate, 16 bit, RGB, three
  // pages, a resolution) and a big-endian file made by hand: the tag checks must pass them all.
  int read = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(SEGICL_SOURCE_DIR) / "fuzz" / "corpus" / "fuzz_image2d")) {
    if (entry.path().extension() != ".tif") continue;
    SCOPED_TRACE(entry.path().filename().string());
    auto image = read_image(entry.path().string());
    EXPECT_GT(image.num_voxels(), 0);
    ++read;
  }
  EXPECT_GE(read, 7);
  write_file_atomic(path("plain.tif"), hand_made_tiff(kPlainTiff));
  EXPECT_NO_THROW(read_image(path("plain.tif")));
}

TEST_F(VolumeIo, TiffWithTagsItkWouldOverflowOnIsCorrupt) {
  // fuzz_image2d: ITK's tag reader overflowed a heap buffer on this file (ASan, a memcpy in
  // itk::TIFFImageIO::ReadTIFFTags; it has an entry of the unknown type 1025), and read past
  // libtiff's copy of a text value without its NUL (strlen).
  expect_corrupt(regression("tiff-tags-overflow-itk.tif"));
  expect_corrupt(regression("tiff-text-without-nul-overreads-itk.tif"));
  // A second page without ImageWidth: ITK read it with the first page's width, past its buffer.
  EXPECT_THROW(read_image(regression("tiff-pages-differ-overruns-itk.tif")), IoError);
  // ImageLength 3.5e9 in a 230-byte file: libtiff allocated 3.5 GB for its strip table.
  expect_corrupt(regression("tiff-huge-length-libtiff-allocates.tif"));
  // A page with two ImageWidth entries, the first 4.3e9: ITK allocated 4.3 GB for a scanline.
  expect_corrupt(regression("tiff-width-twice-itk-allocates.tif"));
  expect_corrupt(regression("tiff-strips-and-tiles-libtiff-leaks.tif"));
  auto with = [&](std::array<uint32_t, 4> extra) {
    auto entries = kPlainTiff;
    entries.push_back(extra);
    std::sort(entries.begin(), entries.end());
    return hand_made_tiff(entries);
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"unknown-type.tif", with({0x1100, 0x401, 1, 1})},
      {"datetime-as-short.tif", with({306, 3, 1, 2})},
      {"width-as-ascii.tif", [&] { auto e = kPlainTiff; e[0] = {256, 2, 1, 8}; return hand_made_tiff(e); }()},
      {"values-past-the-end.tif", with({270, 2, 4000, 200})},
      {"text-without-nul.tif", with({64006, 2, 1, 1})},  // ITK's strlen read past libtiff's copy
      {"width-twice.tif", with({256, 4, 1, 4294443016u})},  // libtiff keeps the first, huge one
      {"strips-and-tiles.tif", with({324, 4, 1, 8})},  // libtiff leaked its offset arrays
      {"no-width.tif", [&] { auto e = kPlainTiff; e.erase(e.begin()); return hand_made_tiff(e); }()},
  };
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    write_file_atomic(path(name), bytes);
    expect_corrupt(path(name));
  }
}

TEST_F(VolumeIo, BmpWhoseHeaderItkWouldOverrunOnIsRefused) {
  // fuzz_image2d: an RLE8 BMP whose runs outgrow the image made ITK's decoder write past its
  // buffer (SEGV in itk::BMPImageIO::Read, heap corruption found later in unrelated frees).
  EXPECT_THROW(read_image(regression("bmp-rle8-overruns-itk.bmp")), IoError);  // RLE8: refused as such
  const std::string good = read_file((fs::path(SEGICL_SOURCE_DIR) / "fuzz" / "corpus" / "fuzz_image2d" / "us.bmp").string());
  EXPECT_NO_THROW(write_file_atomic(path("good.bmp"), good));
  EXPECT_NO_THROW(read_image(path("good.bmp")));
  auto edited = [&](size_t at, std::string bytes) {
    std::string copy = good;
    copy.replace(at, bytes.size(), bytes);
    return copy;
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"rows-missing.bmp", good.substr(0, good.size() - 13)},
      {"huge-width.bmp", edited(18, std::string("\xff\xff\xff\x7f", 4))},
      {"zero-height.bmp", edited(22, std::string(4, '\0'))},
      {"7-bits.bmp", edited(28, std::string("\x07\0", 2))},
      {"header-only.bmp", good.substr(0, 20)},
  };
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    write_file_atomic(path(name), bytes);
    expect_corrupt(path(name));
  }
  // A well-formed RLE BMP is not corrupt, only a format we no longer hand to ITK.
  write_file_atomic(path("rle8.bmp"), edited(30, std::string("\x01\0\0\0", 4)));
  try {
    read_image(path("rle8.bmp"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.message(), "compression 1")) << e.message();
    EXPECT_TRUE(contains(e.hint(), "uncompressed BMP or to PNG")) << e.hint();
  }
}

}  // namespace
}  // namespace segicl::io
