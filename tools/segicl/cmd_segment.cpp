// `segicl segment`: segment one image (IMAGE -o MASK) or a folder (-i DIR -o DIR, like nnU-Net's
// predict) from a text instruction and/or example image-label pairs. Parses flags, reads and
// writes files, calls segicl_infer; the model work is all in Segmenter.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "common.h"
#include "segicl/core/error.h"
#include "segicl/infer/postprocess.h"
#include "segicl/infer/segmenter.h"
#include "segicl/io/volume.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace segicl::cli {
namespace {

namespace fs = std::filesystem;

struct SegmentArgs {
  std::string image, input_dir, output;
  std::string text;
  std::vector<std::pair<std::string, std::string>> examples;
  std::string examples_dir;
  int example_label = -1;
  std::string model;
  std::string probability, uncertainty, overlay;
  std::string post;
  std::string device = "auto";
  std::string memory;  // "": the model's own exemplar memory if present; "none": none
  bool force = false;
  infer::SegmentOptions options;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Splits a file name into stem and extension, treating ".nii.gz" as one extension.
std::pair<std::string, std::string> split_name(const std::string& name) {
  const std::string l = lower(name);
  if (l.size() > 7 && l.compare(l.size() - 7, 7, ".nii.gz") == 0) return {name.substr(0, name.size() - 7), ".nii.gz"};
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return {name, ""};
  return {name.substr(0, dot), name.substr(dot)};
}

bool is_image_file(const fs::path& path) {
  static const std::vector<std::string> known{".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".png",
                                              ".jpg",    ".jpeg", ".bmp", ".tif", ".tiff"};
  const auto ext = lower(split_name(path.filename().string()).second);
  return fs::is_regular_file(path) && std::find(known.begin(), known.end(), ext) != known.end();
}

std::vector<fs::path> image_files(const fs::path& dir) {
  if (!fs::is_directory(dir)) SEGICL_THROW(IoError, "not a directory", dir.string(), "check the path");
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (is_image_file(entry.path())) out.push_back(entry.path());
  std::sort(out.begin(), out.end());  // never rely on filesystem order
  return out;
}

// nnU-Net names images case_0000.nii.gz (channel suffix) and labels case.nii.gz.
std::string strip_channel_suffix(const std::string& stem) {
  if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, "_0000") == 0) return stem.substr(0, stem.size() - 5);
  return stem;
}

std::vector<std::pair<std::string, std::string>> pairs_from_dir(const fs::path& dir) {
  auto pick = [&](std::initializer_list<const char*> names) -> fs::path {
    for (const char* n : names)
      if (fs::is_directory(dir / n)) return dir / n;
    return {};
  };
  const auto images = pick({"images", "imagesTr"}), labels = pick({"labels", "labelsTr"});
  if (images.empty() || labels.empty())
    SEGICL_THROW(IoError, "examples folder lacks images/ and labels/ (or imagesTr/ and labelsTr/)", dir.string(),
                 "put example images in DIR/images and their label maps, same file names, in DIR/labels");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& image : image_files(images)) {
    const auto name = image.filename().string();
    auto [stem, ext] = split_name(name);
    fs::path label = labels / name;
    if (!fs::exists(label)) label = labels / (strip_channel_suffix(stem) + ext);
    if (!fs::exists(label))
      SEGICL_THROW(IoError, "no label map for example image " + name, image.string(),
                   "add " + (labels / name).string() + " or remove the image");
    out.emplace_back(image.string(), label.string());
  }
  if (out.empty()) SEGICL_THROW(IoError, "examples folder holds no images", images.string(), "");
  return out;
}

bool is_png(const std::string& path) { return lower(split_name(path).second) == ".png"; }

// Probability/uncertainty maps: float files keep values; PNG stores 0..255 (value x 255).
void write_map(io::Volume map, const std::string& path) {
  if (is_png(path))
    for (auto& v : map.voxels) v = std::round(std::clamp(v, 0.0f, 1.0f) * 255.0f);
  io::write_image(map, path);
}

// Grey levels of the image in [0, 255] (0.5-99.5 percentile window, channels averaged).
std::vector<float> grey_levels(const io::Volume& image) {
  const int64_t n = image.num_voxels();
  std::vector<float> grey(n);
  for (int64_t i = 0; i < n; ++i) {
    float sum = 0;
    for (int c = 0; c < image.channels; ++c) sum += image.voxels[i * image.channels + c];
    grey[i] = sum / image.channels;
  }
  std::vector<float> sorted = grey;
  const auto lo_i = static_cast<size_t>(0.005 * (n - 1)), hi_i = static_cast<size_t>(0.995 * (n - 1));
  std::nth_element(sorted.begin(), sorted.begin() + lo_i, sorted.end());
  const float lo = sorted[lo_i];
  std::nth_element(sorted.begin(), sorted.begin() + hi_i, sorted.end());
  const float hi = std::max(sorted[hi_i], lo + 1e-6f);
  for (auto& g : grey) g = std::clamp((g - lo) / (hi - lo), 0.0f, 1.0f) * 255.0f;
  return grey;
}

// PNG overlay: the image in grey with the mask contour in red. 2D: one image; 3D: a montage (4
// columns) of up to 8 planes across `axis` with the most foreground, in slice order.
void write_overlay(const io::Volume& image, const io::LabelMap& mask, int axis, const std::string& path) {
  const auto grey = grey_levels(image);
  const auto& size = mask.size;
  const int a = image.dims == 3 ? axis : 2;
  const int u_axis = a == 0 ? 1 : 0, v_axis = a == 2 ? 1 : 2;
  const int64_t nu = size[u_axis], nv = size[v_axis], ns = size[a];
  auto index = [&](int64_t s, int64_t u, int64_t v) {
    std::array<int64_t, 3> p{};
    p[a] = s, p[u_axis] = u, p[v_axis] = v;
    return (p[2] * size[1] + p[1]) * size[0] + p[0];
  };
  std::vector<int64_t> count(ns, 0);
  for (int64_t s = 0; s < ns; ++s)
    for (int64_t v = 0; v < nv; ++v)
      for (int64_t u = 0; u < nu; ++u) count[s] += mask.labels[index(s, u, v)] != 0;
  std::vector<int64_t> order(ns);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return count[x] > count[y]; });
  std::vector<int64_t> chosen;
  if (ns > 0 && count[order[0]] == 0) {  // nothing found: evenly spaced planes
    for (int64_t i = 0; i < std::min<int64_t>(8, ns); ++i) chosen.push_back(i * ns / std::min<int64_t>(8, ns));
  } else {
    chosen.assign(order.begin(), order.begin() + std::min<int64_t>(8, ns));
  }
  std::sort(chosen.begin(), chosen.end());
  const int64_t tiles = static_cast<int64_t>(chosen.size()), cols = std::min<int64_t>(4, tiles);
  const int64_t rows = (tiles + cols - 1) / cols;
  io::Volume out;
  out.dims = 2;
  out.channels = 3;
  out.size = {cols * nu, rows * nv, 1};
  out.geometry.spacing_known = false;
  out.voxels.assign(out.size[0] * out.size[1] * 3, 0.0f);
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t s = chosen[t], ox = (t % cols) * nu, oy = (t / cols) * nv;
    for (int64_t v = 0; v < nv; ++v)
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t src = index(s, u, v);
        float* px = &out.voxels[((oy + v) * out.size[0] + ox + u) * 3];
        bool edge = false;
        if (mask.labels[src] != 0) {
          edge = u == 0 || v == 0 || u + 1 == nu || v + 1 == nv || !mask.labels[index(s, u - 1, v)] ||
                 !mask.labels[index(s, u + 1, v)] || !mask.labels[index(s, u, v - 1)] ||
                 !mask.labels[index(s, u, v + 1)];
        }
        if (edge) {
          px[0] = 255, px[1] = 0, px[2] = 0;
        } else {
          px[0] = px[1] = px[2] = grey[src];
        }
      }
  }
  io::write_image(out, path);
}

struct Job {
  std::string input, output;
};

void check_writable(const std::string& path, bool force) {
  if (path.empty()) return;
  if (fs::exists(path) && !force) SEGICL_THROW(UsageError, "output exists", path, "pass --force to overwrite it");
}

void run_segment(const SegmentArgs& a) {
  if (a.image.empty() == a.input_dir.empty())
    SEGICL_THROW(UsageError, a.image.empty() ? "no input: give IMAGE or -i INPUT_DIR" : "give IMAGE or -i, not both",
                 "", "e.g. segicl segment ct.nii.gz -o mask.nii.gz --text \"segment the liver\"");
  std::vector<Job> jobs;
  if (!a.image.empty()) {
    jobs.push_back({a.image, a.output});
    for (const auto* p : {&a.output, &a.probability, &a.uncertainty, &a.overlay}) check_writable(*p, a.force);
  } else {
    if (!a.probability.empty() || !a.uncertainty.empty() || !a.overlay.empty())
      SEGICL_THROW(UsageError, "--probability, --uncertainty and --overlay take one image, not a folder (-i)", "",
                   "run those images one at a time");
    for (const auto& file : image_files(a.input_dir)) {
      auto [stem, ext] = split_name(file.filename().string());
      const std::string l = lower(ext);
      // 2D formats we cannot write (JPEG/BMP/TIFF) become PNG; volumes become .nii.gz.
      const bool planar = l == ".png" || l == ".jpg" || l == ".jpeg" || l == ".bmp" || l == ".tif" || l == ".tiff";
      jobs.push_back({file.string(), (fs::path(a.output) / (strip_channel_suffix(stem) + (planar ? ".png" : ".nii.gz"))).string()});
      check_writable(jobs.back().output, a.force);
    }
    if (jobs.empty())
      SEGICL_THROW(IoError, "input folder holds no image files", a.input_dir,
                   "expected .nii.gz, .nii, .mha, .nrrd, .png, ... files");
  }

  auto pairs = a.examples;
  if (!a.examples_dir.empty()) {
    auto more = pairs_from_dir(a.examples_dir);
    pairs.insert(pairs.end(), more.begin(), more.end());
  }
  std::vector<infer::Example> examples;
  for (const auto& [image, labels] : pairs) {
    auto [img, lab] = io::read_image_and_labels(image, labels);
    examples.push_back({std::move(img), std::move(lab), a.example_label, image});
  }
  infer::SegmentOptions options = a.options;
  options.postprocess = split_list(a.post);
  infer::Segmenter segmenter(a.model.empty() ? default_model() : a.model, infer::resolve_device(a.device), a.memory);
  if (!a.input_dir.empty()) fs::create_directories(a.output);

  for (size_t i = 0; i < jobs.size(); ++i) {
    const auto& job = jobs[i];
    if (jobs.size() > 1) std::fprintf(stderr, "[%zu/%zu] %s\n", i + 1, jobs.size(), job.input.c_str());
    auto query = io::read_image(job.input);
    auto result = segmenter.segment(query, examples, a.text, options);
    io::write_labels(result.mask, job.output);
    if (!a.probability.empty()) write_map(result.probability, a.probability);
    if (!a.uncertainty.empty()) write_map(result.uncertainty, a.uncertainty);
    if (!a.overlay.empty()) write_overlay(query, result.mask, result.through_axis, a.overlay);
    std::string recalled;
    for (const auto& task : result.recalled_tasks) recalled += (recalled.empty() ? "\trecalled=" : ",") + task;
    std::printf("%s\tslices=%lld\tk=%lld\tseconds=%.2f\tforeground=%lld%s\n", job.output.c_str(),
                static_cast<long long>(result.slices), static_cast<long long>(result.num_context), result.seconds,
                static_cast<long long>(infer::count_foreground(result.mask)), recalled.c_str());
    std::fflush(stdout);
  }
}

}  // namespace

void register_segment(CLI::App& app, GlobalOptions& global) {
  static SegmentArgs a;
  a.model = default_model();
  auto* cmd = app.add_subcommand(
      "segment",
      "Segment an image or volume from a text instruction and/or example image-label pairs\n"
      "  e.g. segicl segment ct.nii.gz -o liver.nii.gz --text \"segment the liver\" \\\n"
      "         --example ex1.nii.gz ex1_labels.nii.gz --example-label 6 --modality CT --overlay liver.png\n"
      "  batch: segicl segment -i imagesTs/ -o predictions/ --examples-dir examples/ --text \"segment the liver\"");
  cmd->add_option("image", a.image, "Query image or volume (.nii.gz, .nii, .mha, .nrrd, .png, ... or a DICOM folder)");
  cmd->add_option("-i,--input-dir", a.input_dir, "Segment every image file in this folder (sorted); -o is then a folder");
  cmd->add_option("-o,--output", a.output, "Output mask file (or folder with -i); masks are 0/1")->required();
  cmd->add_option("--text", a.text, "Instruction, e.g. \"segment the liver\" (empty: examples only)")->capture_default_str();
  cmd->add_option("--example", a.examples, "Example pair IMG LABEL (repeatable)");
  cmd->add_option("--examples-dir", a.examples_dir, "Folder with images/ + labels/ (or imagesTr/ + labelsTr/), paired by file name");
  cmd->add_option("--example-label", a.example_label, "Label value marking the structure in the examples (-1: any non-zero)")->capture_default_str();
  cmd->add_option("--model", a.model, std::string("Checkpoint (default: $SEGICL_MODEL, else the shipped ") + kShippedModel + " in the source tree)")->capture_default_str();
  cmd->add_option("--steps", a.options.ddim_steps, "DDIM steps per sample")->capture_default_str();
  cmd->add_option("--samples", a.options.num_samples, "Diffusion samples averaged per slice (variance -> --uncertainty)")->capture_default_str();
  cmd->add_option("--seed", a.options.seed, "Noise seed (same seed, same CPU result)")->capture_default_str();
  cmd->add_option("--threshold", a.options.threshold, "Foreground when probability > threshold")->capture_default_str();
  cmd->add_option("--slices-per-example", a.options.slices_per_example, "Slices taken from each 3D example")->capture_default_str();
  cmd->add_option("--batch-slices", a.options.batch_slices, "Query slices per forward pass")->capture_default_str();
  cmd->add_option("--probability", a.probability, "Also write the probability map (float; PNG stores x255)");
  cmd->add_option("--uncertainty", a.uncertainty, "Also write the per-voxel variance over samples");
  cmd->add_option("--overlay", a.overlay, "Also write a PNG: image + red mask contour (3D: montage of 8 slices)");
  cmd->add_option("--post", a.post, "Post-processing, comma-separated: largest-cc (3D), fill-holes (per slice)")->capture_default_str();
  cmd->add_option("--modality", a.options.modality, "Modality of query and examples (CT enables HU windowing)")->capture_default_str();
  cmd->add_option("--device", a.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--memory", a.memory,
                  "Exemplar memory for text-only runs (default: the model's own MODEL.memory if present; none: off)");
  cmd->add_option("--memory-examples", a.options.memory_examples,
                  "Text only: example pairs recalled from the memory (0: the text alone)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  cmd->add_flag("--memory-top-up", a.options.memory_top_up,
                "Also top examples giving fewer than --memory-examples pairs up with recalled ones");
  cmd->add_option("--memory-choice", a.options.memory_choice,
                  "Recalled pairs: spread (seeded, patients and datasets in turn) or similar (layout closest to the query)")
      ->check(CLI::IsMember(data::memory_choices()))
      ->capture_default_str();
  cmd->add_flag("--force", a.force, "Overwrite existing outputs");
  cmd->callback([&global] {
    start(global);
    run_segment(a);
  });
}

}  // namespace segicl::cli
