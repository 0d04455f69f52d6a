// Pack writer and reader (format: pack_format.h, docs/formats/pack.md).
#include "segicl/data/pack.h"

#include <torch/torch.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <set>

#include <nlohmann/json.hpp>

#include "pack_format.h"
#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/seed.h"
#include "segicl/io/volume.h"

namespace segicl::data {
using Json = nlohmann::json;
namespace pf = pack_format;

const char* to_string(PackPurpose purpose) {
  switch (purpose) {
    case PackPurpose::kTrain: return "train";
    case PackPurpose::kVal: return "val";
    case PackPurpose::kEval: return "eval";
  }
  return "?";
}

namespace {

uint64_t fnv1a64(const char* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ull;
  return h;
}

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
T take(const std::string& in, size_t& offset, const std::string& path) {
  if (offset + sizeof(T) > in.size())
    SEGICL_THROW(FormatError, "pack is truncated (header)", path, "re-create it with `segicl pack`");
  T value;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  offset += sizeof(T);
  return value;
}

// A whole number in [lo, hi] from the header. nlohmann's get<int>() casts a float such as 1e300
// with undefined behaviour, and a huge count would size the allocations below.
int64_t whole(const Json& value, int64_t lo, int64_t hi, const char* what, const std::string& path) {
  if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(hi)) ||
      value.get<int64_t>() < lo || value.get<int64_t>() > hi)
    SEGICL_THROW(FormatError, std::string("pack header has an invalid ") + what + ": " + value.dump(), path,
                 "re-create it with `segicl pack`");
  return value.get<int64_t>();
}

// zstd cannot expand its input more than 32768-fold (an RLE block: 4 bytes for 128 KiB), so a
// header claiming more raw bytes than that is corrupt; checked before the raw buffer is allocated.
constexpr uint64_t kMaxZstdExpansion = 32768;

PackPurpose purpose_from(const std::string& s, const std::string& path) {
  if (s == "train") return PackPurpose::kTrain;
  if (s == "val") return PackPurpose::kVal;
  if (s == "eval") return PackPurpose::kEval;
  SEGICL_THROW(FormatError, "unknown pack purpose '" + s + "'", path, "re-create it with `segicl pack`");
}

Role role_from(const std::string& s) {
  return s == "train" ? Role::kTrain : s == "eval" ? Role::kEval : Role::kOod;
}

// The uncompressed payload: images, labels, then the four int32 slice columns.
std::string payload(const torch::Tensor& images, const torch::Tensor& labels,
                    std::initializer_list<const std::vector<int32_t>*> columns) {
  std::string raw;
  raw.reserve(images.numel() + labels.numel() + 16 * images.size(0));
  raw.append(reinterpret_cast<const char*>(images.data_ptr<uint8_t>()), images.numel());
  raw.append(reinterpret_cast<const char*>(labels.data_ptr<uint8_t>()), labels.numel());
  for (const auto* column : columns)
    raw.append(reinterpret_cast<const char*>(column->data()), column->size() * sizeof(int32_t));
  return raw;
}

// A description given as JSON is stored as JSON, anything else as a string.
Json description_value(const std::string& description_json) {
  try {
    return Json::parse(description_json);
  } catch (const Json::exception&) {
    return description_json;
  }
}

// The file layout of docs/formats/pack.md: magic, version, header, then the zstd payload with its
// sizes and checksum. Written atomically.
int64_t write_pack_file(const std::string& path, const std::string& header_text, const std::string& raw,
                        int compression_level) {
  std::string compressed(ZSTD_compressBound(raw.size()), '\0');
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, compression_level);
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_enableLongDistanceMatching, 1);
  size_t size = ZSTD_compress2(ctx, compressed.data(), compressed.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(ctx);
  if (ZSTD_isError(size))
    SEGICL_THROW(IoError, std::string("zstd compression failed: ") + ZSTD_getErrorName(size), path, "");
  compressed.resize(size);

  std::string file;
  file.append(pf::kMagic, sizeof(pf::kMagic));
  put<uint32_t>(file, pf::kPackVersion);
  put<uint64_t>(file, header_text.size());
  file += header_text;
  put<uint64_t>(file, compressed.size());
  put<uint64_t>(file, raw.size());
  put<uint64_t>(file, fnv1a64(compressed.data(), compressed.size()));
  file += compressed;
  write_file_atomic(path, file);
  return static_cast<int64_t>(file.size());
}

}  // namespace

PackWriter::PackWriter(PackPurpose purpose, const PackOptions& options)
    : purpose_(purpose), options_(options), rng_state_(derive_seed(options.seed, "pack-empty-slices")) {}

int PackWriter::dataset_index(const Dataset& d) {
  for (size_t i = 0; i < datasets_.size(); ++i)
    if (datasets_[i].name == d.name) return static_cast<int>(i);
  datasets_.push_back({d.name, d.modality, d.region, d.role});
  return static_cast<int>(datasets_.size() - 1);
}

int PackWriter::group_index(const std::string& dataset, const std::string& group) {
  for (size_t i = 0; i < groups_.size(); ++i)
    if (groups_[i].first == dataset && groups_[i].second == group) return static_cast<int>(i);
  groups_.emplace_back(dataset, group);
  return static_cast<int>(groups_.size() - 1);
}

void PackWriter::add_case(const Dataset& dataset, const Case& item, const PreparedVolume& volume) {
  const Split wanted = purpose_ == PackPurpose::kTrain ? Split::kTrain : Split::kVal;
  if (purpose_ != PackPurpose::kEval && (dataset.role != Role::kTrain || item.split != wanted)) {
    SEGICL_THROW(DataError,
                 "case " + item.id + " (" + to_string(dataset.role) + " dataset, " + to_string(item.split) +
                     " split) cannot enter a " + to_string(purpose_) + " pack",
                 item.image_path, "OOD, eval and test data are never trained on");
  }
  if (!volume.labels.defined()) SEGICL_THROW(DataError, "case has no labels", item.label_path, "");
  const int d = dataset_index(dataset);
  const int g = group_index(dataset.name, item.group);
  const int case_number = static_cast<int>(&item - dataset.cases.data());
  for (const auto& task : dataset.tasks_for(item)) {
    bool known = false;
    for (const auto& t : tasks_) known |= t.name == task.name;
    if (!known) tasks_.push_back({task.name, task.structure, d, task.label_ids});
  }
  const int resolution = options_.preprocess.resolution;
  for (int64_t s = 0; s < volume.num_slices(); ++s) {
    auto labels = label_plane(volume, s, resolution);
    bool empty = (labels > 0).sum().item<int64_t>() < options_.min_task_pixels;
    if (empty && volume.dims == 3) {
      double u = (splitmix64(rng_state_) >> 11) * (1.0 / 9007199254740992.0);
      if (u >= options_.preprocess.empty_slice_fraction) continue;
    }
    auto image = image_plane(volume, s, resolution);
    images_.push_back((image * 255.0).round().clamp(0, 255).to(torch::kUInt8));
    labels_.push_back(labels.clamp(0, 255).to(torch::kUInt8));
    slice_group_.push_back(g);
    slice_dataset_.push_back(d);
    slice_case_.push_back(case_number);
    slice_index_.push_back(static_cast<int32_t>(s));
  }
}

void PackWriter::add_case_from_files(const Dataset& dataset, const Case& item) {
  auto [image, labels] = io::read_image_and_labels(item.image_path, item.label_path);
  auto volume = prepare(image, &labels, item.modality.empty() ? dataset.modality : item.modality,
                        options_.preprocess);
  add_case(dataset, item, volume);
}

int64_t PackWriter::write(const std::string& path, const std::string& description_json) const {
  if (images_.empty()) SEGICL_THROW(DataError, "nothing to pack: no slices were added", path, "");
  const int64_t n = static_cast<int64_t>(images_.size());
  auto images = torch::stack(images_).contiguous();
  auto labels = torch::stack(labels_).contiguous();

  Json header;
  header["format"] = "segicl-pack";
  header["version"] = pf::kPackVersion;
  header["purpose"] = to_string(purpose_);
  header["resolution"] = options_.preprocess.resolution;
  header["channels"] = images.size(1);
  header["num_slices"] = n;
  header["preprocess"] = {{"luminance", options_.preprocess.luminance},
                          {"low_percentile", options_.preprocess.low_percentile},
                          {"high_percentile", options_.preprocess.high_percentile},
                          {"ct_window", {options_.preprocess.ct_window_low, options_.preprocess.ct_window_high}},
                          {"empty_slice_fraction", options_.preprocess.empty_slice_fraction},
                          {"min_task_pixels", options_.min_task_pixels}};
  header["seed"] = options_.seed;
  for (const auto& d : datasets_)
    header["datasets"].push_back({{"name", d.name}, {"modality", d.modality}, {"region", d.region},
                                  {"role", to_string(d.role)}});
  for (const auto& [dataset, group] : groups_) header["groups"].push_back(dataset + "/" + group);
  for (const auto& t : tasks_)
    header["tasks"].push_back({{"name", t.name}, {"structure", t.structure}, {"dataset", t.dataset},
                               {"label_ids", t.label_ids}});
  header["description"] = description_value(description_json);
  const std::string raw = payload(images, labels, {&slice_group_, &slice_dataset_, &slice_case_, &slice_index_});
  return write_pack_file(path, header.dump(), raw, options_.compression_level);
}

int64_t PackWriter::write_subset(const Pack& source, const std::vector<int64_t>& slices, const std::string& path,
                                 const std::string& description_json, int compression_level) {
  if (slices.empty()) SEGICL_THROW(DataError, "nothing to pack: no slices were selected", path, "");
  for (int64_t s : slices)
    if (s < 0 || s >= source.num_slices())
      SEGICL_THROW(UsageError, "slice " + std::to_string(s) + " is not in the source pack", path, "");
  auto index = torch::tensor(slices, torch::kLong);
  auto images = source.images_.index_select(0, index).contiguous();
  auto labels = source.labels_.index_select(0, index).contiguous();
  Json header = Json::parse(source.header_json_);
  header["num_slices"] = static_cast<int64_t>(slices.size());
  header["description"] = description_value(description_json);
  std::vector<int32_t> columns[4];
  const std::vector<int32_t>* source_columns[4] = {&source.slice_group_, &source.slice_dataset_, &source.slice_case_,
                                                   &source.slice_index_};
  for (int c = 0; c < 4; ++c)
    for (int64_t s : slices) columns[c].push_back((*source_columns[c])[s]);
  const std::string raw = payload(images, labels, {&columns[0], &columns[1], &columns[2], &columns[3]});
  return write_pack_file(path, header.dump(), raw, compression_level);
}

std::shared_ptr<const Pack> Pack::open(const std::string& path) {
  const std::string hint = "re-create it with `segicl pack`";
  std::string file = read_file(path);
  size_t offset = 0;
  if (file.size() < sizeof(pf::kMagic) || std::memcmp(file.data(), pf::kMagic, sizeof(pf::kMagic)) != 0)
    SEGICL_THROW(FormatError, "not a segicl pack (bad magic)", path, "pass a file made by `segicl pack`");
  offset = sizeof(pf::kMagic);
  auto version = take<uint32_t>(file, offset, path);
  if (version != pf::kPackVersion)
    SEGICL_THROW(FormatError, "pack format version " + std::to_string(version) + " is not supported (this build reads " +
                                  std::to_string(pf::kPackVersion) + ")",
                 path, hint + " with this version of segicl");
  auto header_bytes = take<uint64_t>(file, offset, path);
  if (header_bytes > pf::kMaxHeaderBytes || offset + header_bytes > file.size())
    SEGICL_THROW(FormatError, "pack is truncated or its header length is corrupt", path, hint);
  std::string header_text = file.substr(offset, header_bytes);
  offset += header_bytes;
  auto payload_bytes = take<uint64_t>(file, offset, path);
  auto raw_bytes = take<uint64_t>(file, offset, path);
  auto checksum = take<uint64_t>(file, offset, path);
  if (payload_bytes != file.size() - offset)
    SEGICL_THROW(FormatError,
                 "pack is truncated: payload holds " + std::to_string(file.size() - offset) + " of " +
                     std::to_string(payload_bytes) + " bytes",
                 path, hint);
  if (fnv1a64(file.data() + offset, payload_bytes) != checksum)
    SEGICL_THROW(FormatError, "pack payload checksum mismatch (corrupt file)", path, hint);

  Json header;
  try {
    header = Json::parse(header_text);
  } catch (const Json::exception& e) {
    SEGICL_THROW(FormatError, std::string("pack header is not valid JSON: ") + e.what(), path, hint);
  }
  auto pack = std::make_shared<Pack>();
  try {
    pack->purpose_ = purpose_from(header.at("purpose").get<std::string>(), path);
    pack->resolution_ = static_cast<int>(whole(header.at("resolution"), 1, 4096, "resolution", path));
    pack->channels_ = static_cast<int>(whole(header.at("channels"), 1, 4, "channel count", path));
    const int64_t r = pack->resolution_, c = pack->channels_;
    const uint64_t slice_bytes = static_cast<uint64_t>(c * r * r + r * r + 16);
    // Bounded so that n * slice_bytes cannot wrap around to a small, matching raw_bytes.
    const int64_t n = whole(header.at("num_slices"), 1, pf::kMaxRawBytes / slice_bytes, "slice count", path);
    const uint64_t expected = static_cast<uint64_t>(n) * slice_bytes;
    if (raw_bytes != expected || raw_bytes > pf::kMaxRawBytes)
      SEGICL_THROW(FormatError, "pack payload size does not match its header", path, hint);
    if (raw_bytes / kMaxZstdExpansion > payload_bytes)
      SEGICL_THROW(FormatError,
                   "pack payload (" + std::to_string(payload_bytes) + " bytes) cannot hold the " +
                       std::to_string(raw_bytes) + " bytes its header claims",
                   path, hint);
    std::string raw(raw_bytes, '\0');
    size_t got = ZSTD_decompress(raw.data(), raw.size(), file.data() + offset, payload_bytes);
    if (ZSTD_isError(got) || got != raw_bytes)
      SEGICL_THROW(FormatError, "pack payload does not decompress", path, hint);
    size_t at = 0;
    pack->images_ = torch::empty({n, c, r, r}, torch::kUInt8);
    std::memcpy(pack->images_.data_ptr<uint8_t>(), raw.data() + at, n * c * r * r);
    at += n * c * r * r;
    pack->labels_ = torch::empty({n, r, r}, torch::kUInt8);
    std::memcpy(pack->labels_.data_ptr<uint8_t>(), raw.data() + at, n * r * r);
    at += n * r * r;
    for (auto* column : {&pack->slice_group_, &pack->slice_dataset_, &pack->slice_case_, &pack->slice_index_}) {
      column->resize(n);
      std::memcpy(column->data(), raw.data() + at, n * sizeof(int32_t));
      at += n * sizeof(int32_t);
    }
    for (const auto& d : header.at("datasets"))
      pack->datasets_.push_back({d.at("name"), d.at("modality"), d.at("region"), role_from(d.at("role"))});
    for (int32_t d : pack->slice_dataset_)
      if (d < 0 || d >= static_cast<int32_t>(pack->datasets_.size()))
        SEGICL_THROW(FormatError, "pack slice table names an unknown dataset", path, hint);
    // A training pack must be what its name says: refuse one that claims OOD content.
    if (pack->purpose_ == PackPurpose::kTrain)
      for (const auto& d : pack->datasets_)
        if (d.role != Role::kTrain)
          SEGICL_THROW(FormatError, "training pack contains " + std::string(to_string(d.role)) + " dataset " + d.name,
                       path, hint);
    // Positives/negatives per task, from one label histogram per slice (one pass over the labels,
    // not one per task: 80 tasks x 4k slices took ~50 s the naive way).
    auto histogram = torch::zeros({n, 256}, torch::kInt32);
    const int64_t chunk = 256;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      int64_t end = std::min(n, begin + chunk);
      auto ids = pack->labels_.slice(0, begin, end).reshape({end - begin, r * r}).to(torch::kLong);
      histogram.slice(0, begin, end).scatter_add_(1, ids, torch::ones(ids.sizes(), torch::kInt32));
    }
    const Json& preprocess = header.at("preprocess");
    const int64_t min_pixels = preprocess.contains("min_task_pixels")
                                   ? whole(preprocess.at("min_task_pixels"), 0, r * r, "min_task_pixels", path)
                                   : 1;
    const int64_t num_datasets = static_cast<int64_t>(pack->datasets_.size());
    for (const auto& t : header.at("tasks")) {
      PackTask task{t.at("name"), t.at("structure"),
                    static_cast<int>(whole(t.at("dataset"), 0, num_datasets - 1, "task dataset", path)), {}, {}, {}};
      for (const auto& id : t.at("label_ids"))
        task.label_ids.push_back(static_cast<int>(whole(id, 0, 65535, "label id", path)));
      auto count = torch::zeros({n}, torch::kInt32);
      for (int id : task.label_ids)
        if (id > 0 && id < 256) count += histogram.select(1, id);
      auto counts_a = count.accessor<int32_t, 1>();
      for (int64_t i = 0; i < n; ++i) {
        if (pack->slice_dataset_[i] != task.dataset) continue;
        (counts_a[i] >= min_pixels ? task.positives : task.negatives).push_back(static_cast<int32_t>(i));
      }
      pack->tasks_.push_back(std::move(task));
    }
  } catch (const Json::exception& e) {
    SEGICL_THROW(FormatError, std::string("pack header misses a field: ") + e.what(), path, hint);
  }
  pack->header_json_ = header_text;
  return pack;
}

}  // namespace segicl::data
