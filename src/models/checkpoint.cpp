// Checkpoint save/load with meta-first validation (see checkpoint.h).
#include "segicl/models/checkpoint.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "segicl/core/atomic_file.h"
#include "segicl/core/error.h"
#include "segicl/core/log.h"
#include "segicl/core/pickle_check.h"
#include "segicl/core/zip_check.h"

namespace segicl::models {
namespace {

const char* kHint = "pass a checkpoint written by `segicl train` (or retrain)";

bool ends_with(const std::string& name, std::string_view suffix) {
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A tensor's sizes and strides must stay inside its storage before anything reads it: LibTorch
// 1.13 rebuilds a pickled tensor with whatever geometry the pickle gives, so a corrupt checkpoint
// could hand back a view past its (possibly empty) storage (a null read in fuzz_checkpoint).
void check_tensor_storage(const torch::Tensor& t, const std::string& name, const std::string& path) {
  if (!t.defined() || t.numel() == 0) return;
  if (t.layout() != torch::kStrided || !t.has_storage())
    SEGICL_THROW(FormatError, "tensor '" + name + "' is not a dense tensor", path, kHint);
  int64_t last = t.storage_offset();  // index of the furthest element, in elements
  bool overflow = last < 0;
  for (int64_t d = 0; d < t.dim() && !overflow; ++d) {
    int64_t reach = 0;
    overflow = t.stride(d) < 0 || __builtin_mul_overflow(t.size(d) - 1, t.stride(d), &reach) ||
               __builtin_add_overflow(last, reach, &last);
  }
  int64_t bytes = 0;
  overflow = overflow || __builtin_mul_overflow(last + 1, static_cast<int64_t>(t.element_size()), &bytes);
  if (overflow || bytes > static_cast<int64_t>(t.storage().nbytes()) || t.storage().data() == nullptr)
    SEGICL_THROW(FormatError, "tensor '" + name + "' reaches past its stored data", path, kHint);
}

// What LibTorch's archive reader (PyTorchStreamReader) requires before it can be opened, checked
// first because a reader whose constructor throws leaks its zip state (fuzz_checkpoint: a version
// record of "\x1b\n" made std::stoull throw std::invalid_argument there, leaking 2.8 KB): the
// first entry sits in a folder, and that folder's `version` record is a number from 1 to 10.
void check_torch_archive(std::string_view bytes, const std::string& path) {
  const auto entries = zip_entries(bytes, path);
  if (entries.empty()) SEGICL_THROW(FormatError, "checkpoint archive is empty", path, kHint);
  const auto slash = entries.front().name.find('/');
  if (slash == std::string::npos)
    SEGICL_THROW(FormatError, "not a torch archive (no record folder)", path, kHint);
  const std::string folder = entries.front().name.substr(0, slash + 1);
  bool versioned = false;
  for (const auto& e : entries) {
    if (e.name != folder + "version" && e.name != folder + ".data/version") continue;
    std::string text(e.data);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    const bool digits = e.stored && !text.empty() && text.size() < 3 &&
                        text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoi(text) < 1 || std::stoi(text) > 10)
      SEGICL_THROW(FormatError, "checkpoint archive has an unreadable version record", path, kHint);
    versioned = true;
    break;
  }
  if (!versioned) SEGICL_THROW(FormatError, "not a torch archive (no version record)", path, kHint);
  // The pickles (the tensor table, constants, debug info) are checked here because LibTorch's
  // unpickler trusts lengths, memo indices and stack depth (see pickle_check.h). LibTorch stores
  // them uncompressed; a compressed one could not be checked, so it is refused.
  for (const auto& e : entries) {
    if (!ends_with(e.name, ".pkl") && !ends_with(e.name, ".debug_pkl")) continue;
    if (!e.stored) SEGICL_THROW(FormatError, "checkpoint record '" + e.name + "' is compressed (LibTorch stores pickles as they are)", path, kHint);
    verify_torch_pickle(e.data, e.name, path);
  }
}

// A checkpoint is one file, or (for files that must stay under git's per-file budget) parts
// PATH.00, PATH.01, ... that concatenate to it (scripts/split-checkpoint.sh writes them).
torch::serialize::InputArchive open_archive(const std::string& path) {
  torch::serialize::InputArchive archive;
  if (std::filesystem::exists(path)) {
    // LibTorch does not check the zip CRCs: without this a flipped bit in a weight loads silently.
    check_torch_archive(read_file(path), path);
    try {
      archive.load_from(path);
    } catch (const std::bad_alloc&) {
      // LibTorch's unpickler allocates whatever a length field in the pickle says (13.5 GB for a
      // 12 KB file found by fuzz_checkpoint) before reading that many bytes.
      SEGICL_THROW(FormatError, "checkpoint asks for more memory than there is (corrupt file?)", path, kHint);
    } catch (const std::exception& e) {
      // Not only c10::Error: LibTorch's unpickler throws std::out_of_range on some corrupt
      // archives (fuzz_checkpoint), which escaped as an untyped exception.
      SEGICL_THROW(FormatError, "not a readable checkpoint (truncated or corrupt file)", path, kHint);
    }
    return archive;
  }
  if (!std::filesystem::exists(path + ".00")) SEGICL_THROW(IoError, "checkpoint not found", path, "check the path");
  std::string bytes;
  for (int part = 0;; ++part) {
    char suffix[8];
    std::snprintf(suffix, sizeof suffix, ".%02d", part);
    if (!std::filesystem::exists(path + suffix)) break;
    bytes += read_file(path + suffix);
  }
  check_torch_archive(bytes, path + ".00");
  std::istringstream stream(bytes);
  try {
    archive.load_from(stream);
  } catch (const std::bad_alloc&) {
    SEGICL_THROW(FormatError, "checkpoint asks for more memory than there is (corrupt part?)", path + ".00", kHint);
  } catch (const std::exception& e) {
    SEGICL_THROW(FormatError, "checkpoint parts do not form a readable checkpoint (missing or corrupt part)",
                 path + ".00", kHint);
  }
  return archive;
}

config::Json meta_of(torch::serialize::InputArchive& archive, const std::string& path) {
  c10::IValue value;
  bool found = false;
  try {
    found = archive.try_read("meta", value);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    found = false;
  }
  if (!found || !value.isString()) SEGICL_THROW(FormatError, "checkpoint has no meta record", path, kHint);
  config::Json meta;
  try {
    meta = config::Json::parse(value.toStringRef());
  } catch (const config::Json::exception& e) {
    SEGICL_THROW(FormatError, std::string("checkpoint meta is not valid JSON: ") + e.what(), path, kHint);
  }
  // meta is untrusted: nlohmann's value() throws an untyped type_error on a wrong type.
  if (!meta.is_object()) SEGICL_THROW(FormatError, "checkpoint meta is not a JSON object", path, kHint);
  const std::string format = meta.contains("format") && meta["format"].is_string() ? meta["format"].get<std::string>() : "";
  if (format != kCheckpointFormat)
    SEGICL_THROW(FormatError, "not a segicl checkpoint (format '" + format + "')", path, kHint);
  const auto& version_json = meta.contains("format_version") ? meta["format_version"] : config::Json();
  const int64_t version = version_json.is_number_integer() ? version_json.get<int64_t>() : -1;
  if (version != kCheckpointVersion)
    SEGICL_THROW(FormatError,
                 "checkpoint format_version " + std::to_string(version) + " is not supported (this build reads " +
                     std::to_string(kCheckpointVersion) + ")",
                 path, "use a matching segicl version, or retrain");
  if (!meta.contains("config")) SEGICL_THROW(FormatError, "checkpoint meta has no model config", path, kHint);
  return meta;
}

void read_weights(torch::serialize::InputArchive& archive, SegICLModelImpl& model, const std::string& path) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, torch::Tensor& target) {
    torch::Tensor stored;
    bool found = false;
    try {
      found = archive.try_read("w." + name, stored);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception&) {
      found = false;
    }
    if (!found)
      SEGICL_THROW(FormatError, "checkpoint lacks tensor '" + name + "' (architecture mismatch)", path,
                   "the checkpoint was written for a different model configuration");
    check_tensor_storage(stored, name, path);
    if (stored.sizes() != target.sizes())
      SEGICL_THROW(FormatError,
                   "tensor '" + name + "' has shape " + c10::str(stored.sizes()) + ", the model expects " +
                       c10::str(target.sizes()),
                   path, "the checkpoint was written for a different model configuration");
    target.copy_(stored.to(target.device(), target.scalar_type()));
  };
  for (auto& p : model.named_parameters()) load(p.key(), p.value());
  for (auto& b : model.named_buffers()) load(b.key(), b.value());
}

}  // namespace

void save_checkpoint(const std::string& path, SegICLModelImpl& model, config::Json meta, const SaveOptions& options) {
  meta["format"] = kCheckpointFormat;
  meta["format_version"] = kCheckpointVersion;
  meta["model_kind"] = "segicl";
  meta["config"] = model.config().to_json();
  meta["weights_dtype"] = options.half ? "float16" : "float32";
  if (!meta.contains("created")) {
    std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    meta["created"] = stamp;
  }
  torch::serialize::OutputArchive archive;
  archive.write("meta", c10::IValue(meta.dump()));
  auto store = [&](const std::string& name, const torch::Tensor& t) {
    auto cpu = t.detach().to(torch::kCPU);
    if (options.half && cpu.is_floating_point()) cpu = cpu.to(torch::kHalf);
    archive.write("w." + name, cpu);
  };
  for (const auto& p : model.named_parameters()) store(p.key(), p.value());
  for (const auto& b : model.named_buffers()) store(b.key(), b.value());
  if (options.extra) options.extra(archive);
  publish_atomic(path, [&](const std::string& tmp) {
    try {
      archive.save_to(tmp);
    } catch (const c10::Error& e) {
      SEGICL_THROW(IoError, std::string("cannot write checkpoint: ") + e.what_without_backtrace(), path,
                   "check free disk space and permissions");
    }
  });
}

config::Json read_checkpoint_meta(const std::string& path) {
  auto archive = open_archive(path);
  return meta_of(archive, path);
}

LoadedCheckpoint load_checkpoint(const std::string& path, const torch::Device& device,
                                 const std::function<void(torch::serialize::InputArchive&)>& extra) {
  auto archive = open_archive(path);
  LoadedCheckpoint loaded;
  loaded.meta = meta_of(archive, path);
  ModelConfig config;
  try {
    config = ModelConfig::from_json(loaded.meta["config"], path);
  } catch (const ConfigError& e) {
    SEGICL_THROW(FormatError, "checkpoint config is not understood: " + e.message(), path,
                 "the checkpoint comes from another segicl version; retrain or convert it");
  }
  loaded.model = SegICLModel(config);
  loaded.model->to(device);
  read_weights(archive, *loaded.model, path);
  if (extra) extra(archive);
  auto field = [&](const char* key) -> std::string {
    if (!loaded.meta.contains(key)) return "?";
    const auto& v = loaded.meta[key];
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  log::get("models")->info("loaded {} (stage {}, step {}, {} weights)", path, field("stage"), field("step"),
                           field("weights_dtype"));
  return loaded;
}

void interpolate_weights(SegICLModelImpl& into, const SegICLModelImpl& other, double t,
                         const std::string& into_name, const std::string& other_name) {
  if (into.config().to_json() != other.config().to_json())
    SEGICL_THROW(UsageError, "the two checkpoints have different architectures", other_name,
                 "interpolate a model with a continuation of itself (same config as " + into_name + ")");
  torch::NoGradGuard no_grad;
  auto mix = [&](auto into_items, auto other_items) {
    for (auto& item : into_items) {
      const auto* source = other_items.find(item.key());
      if (!source || !source->sizes().equals(item.value().sizes()))
        SEGICL_THROW(UsageError, "tensor '" + item.key() + "' does not match", other_name,
                     "interpolate a model with a continuation of itself");
      if (item.value().is_floating_point()) item.value().lerp_(source->to(item.value().options()), t);
    }
  };
  mix(into.named_parameters(), other.named_parameters());
  mix(into.named_buffers(), other.named_buffers());
}

config::Json load_weights_into(const std::string& path, SegICLModelImpl& model) {
  auto archive = open_archive(path);
  auto meta = meta_of(archive, path);
  read_weights(archive, model, path);
  return meta;
}

}  // namespace segicl::models
