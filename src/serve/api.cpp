// Request parsing/validation and error replies of the HTTP API (see api.h and docs/serve.md).
// Pure functions over strings: no sockets, no model, so they are unit-tested in milliseconds.
#include "segicl/serve/api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "segicl/infer/postprocess.h"

namespace segicl::serve {
namespace {

using Json = nlohmann::json;

const std::set<std::string>& file_fields() {
  static const std::set<std::string> names{"image", "example_image", "example_label"};
  return names;
}

// Every settable option; also the keys allowed inside the `options` JSON object.
const std::vector<std::string>& option_names() {
  static const std::vector<std::string> names{
      "text",     "threshold",          "steps",   "samples", "seed", "label", "format", "post",
      "modality", "slices_per_example", "memory_examples", "memory_choice", "include", "response"};
  return names;
}

std::string known_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

[[noreturn]] void bad(int status, const std::string& message, const std::string& field,
                      const std::string& hint) {
  throw RequestError(status, message, field, hint);
}

// An option's value as given: a JSON value from `options`, or a string from a field/URL.
class Settings {
 public:
  void set(const std::string& name, Json value, const std::string& source) {
    if (std::find(option_names().begin(), option_names().end(), name) == option_names().end())
      bad(400, "unknown " + source + " '" + name + "'", name,
          "known fields: image, example_image, example_label, options, " +
              known_list(option_names()));
    if (values_.count(name))
      bad(400, "'" + name + "' is given more than once", name,
          "give each option once (field, URL or options JSON)");
    values_[name] = std::move(value);
  }
  bool has(const std::string& name) const { return values_.count(name) > 0; }

  std::string text(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    if (!it->second.is_string()) bad(400, "'" + name + "' must be a string", name, "");
    return it->second.get<std::string>();
  }

  double number(const std::string& name, double fallback, double lo, double hi,
                bool integer) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    double value = 0;
    const Json& v = it->second;
    if (v.is_number()) {
      value = v.get<double>();
    } else if (v.is_string()) {
      const std::string s = v.get<std::string>();
      size_t used = 0;
      bool ok = !s.empty();
      try {
        value = std::stod(s, &used);
      } catch (const std::exception&) {
        ok = false;
      }
      if (!ok || used != s.size())
        bad(400, "'" + name + "' is not a number: '" + s + "'", name, range(lo, hi, integer));
    } else {
      bad(400, "'" + name + "' must be a number", name, range(lo, hi, integer));
    }
    if (!std::isfinite(value) || value < lo || value > hi ||
        (integer && value != std::floor(value)))
      bad(400, "'" + name + "' is out of range: " + v.dump(), name, range(lo, hi, integer));
    return value;
  }

  std::vector<std::string> list(const std::string& name,
                                const std::vector<std::string>& fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    std::vector<std::string> out;
    if (it->second.is_array()) {
      for (const auto& item : it->second) {
        if (!item.is_string()) bad(400, "'" + name + "' must list strings", name, "");
        out.push_back(item.get<std::string>());
      }
      return out;
    }
    const std::string s = text(name, "");
    for (size_t begin = 0; begin < s.size();) {
      size_t comma = std::min(s.find(',', begin), s.size());
      std::string item = s.substr(begin, comma - begin);
      item.erase(0, item.find_first_not_of(' '));
      item.erase(item.find_last_not_of(' ') + 1);
      if (!item.empty()) out.push_back(item);
      begin = comma + 1;
    }
    return out;
  }

 private:
  static std::string range(double lo, double hi, bool integer) {
    auto fmt = [](double x) {
      std::string s = std::to_string(x);
      s.erase(s.find_last_not_of('0') + 1);
      if (!s.empty() && s.back() == '.') s.pop_back();
      return s;
    };
    return std::string("expected ") + (integer ? "an integer" : "a number") + " in [" + fmt(lo) +
           ", " + fmt(hi) + "]";
  }
  std::map<std::string, Json> values_;
};

Upload to_upload(const FormPart& part, const std::string& field) {
  if (part.filename.empty())
    bad(400, "'" + part.name + "' must be a file upload, not a plain field", field,
        "send it as a file part (curl: -F " + part.name + "=@FILE)");
  if (part.content.empty()) bad(400, "uploaded file '" + part.filename + "' is empty", field, "");
  Upload up;
  up.field = field;
  up.filename = part.filename;
  up.extension = file_extension(part.filename);
  up.content = part.content;
  const auto& known = upload_extensions();
  if (std::find(known.begin(), known.end(), up.extension) == known.end())
    bad(415,
        "'" + part.filename + "' is not a supported image type" +
            (up.extension.empty() ? std::string(" (no extension)") : " (" + up.extension + ")"),
        field, "upload " + known_list(known) + "; DICOM series: convert to NIfTI first");
  return up;
}

}  // namespace

RequestError::RequestError(int status, std::string message, std::string field, std::string hint)
    : Error(std::move(message), "", std::move(hint)), status_(status), field_(std::move(field)) {}

ErrorReply error_reply(const std::exception& e, const std::string& field) {
  ErrorReply r;
  r.field = field;
  if (const auto* re = dynamic_cast<const RequestError*>(&e)) {
    r.status = re->status();
    r.error = re->message();
    r.field = re->field();
    r.hint = re->hint();
    r.kind = re->kind();
    return r;
  }
  if (const auto* se = dynamic_cast<const Error*>(&e)) {
    const std::string kind = se->kind();
    r.kind = kind;
    r.error = se->message();
    r.hint = se->hint();
    if (kind == "UsageError" || kind == "ConfigError" || kind == "ShapeError") {
      r.status = 400;
    } else if (kind == "DataError" || kind == "IoError" || kind == "FormatError") {
      r.status = 422;
    } else {
      r.status = 500;
    }
    return r;
  }
  // Foreign exceptions (torch, std::bad_alloc, ...) are the server's fault; their text may name
  // internal paths or symbols, so only the category goes to the client (the log keeps the rest).
  r.status = 500;
  r.kind = "InternalError";
  r.error = "internal error while processing the request";
  r.hint = "see the server log; retry, or report the request that triggers it";
  return r;
}

std::string error_json(const ErrorReply& reply) {
  Json j{{"error", reply.error},
         {"field", reply.field},
         {"hint", reply.hint},
         {"kind", reply.kind},
         {"status", reply.status}};
  // Uploaded file names and messages may hold invalid UTF-8; replace rather than throw here.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

const std::vector<std::string>& upload_extensions() {
  // Single-file formats only: .mhd/.nhdr need a second data file, DICOM series need a folder.
  // TIFF only since io walks every TIFF directory before ITK 5.2's reader sees the file: that
  // reader overflowed heap buffers on crafted tags (reports/RELIABILITY.md, bugs 11 and 25), and
  // TIFF uploads were refused until two 10-minute fuzz_image2d runs of the checks found nothing.
  static const std::vector<std::string> exts{".nii.gz", ".nii", ".mha", ".nrrd", ".png",
                                             ".jpg",    ".jpeg", ".bmp", ".tif", ".tiff"};
  return exts;
}

std::string file_extension(const std::string& filename) {
  const std::string l = lower(filename);
  const auto slash = l.find_last_of("/\\");
  const std::string base = slash == std::string::npos ? l : l.substr(slash + 1);
  if (base.size() > 7 && base.compare(base.size() - 7, 7, ".nii.gz") == 0) return ".nii.gz";
  const auto dot = base.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  return base.substr(dot);
}

SegmentRequest parse_segment_request(const std::vector<FormPart>& parts,
                                     const std::multimap<std::string, std::string>& query,
                                     const RequestLimits& limits) {
  SegmentRequest req;
  Settings settings;
  const FormPart* image = nullptr;
  std::vector<const FormPart*> example_images, example_labels;
  for (const auto& part : parts) {
    if (part.name == "image") {
      if (image)
        bad(400, "more than one 'image' part", "image", "send one query image per request");
      image = &part;
    } else if (part.name == "example_image") {
      example_images.push_back(&part);
    } else if (part.name == "example_label") {
      example_labels.push_back(&part);
    } else if (part.name == "options") {
      Json options;
      try {
        options = Json::parse(part.content);
      } catch (const Json::exception&) {
        bad(400, "'options' is not valid JSON", "options",
            "send a JSON object, e.g. {\"threshold\": 0.5}");
      }
      if (!options.is_object()) bad(400, "'options' must be a JSON object", "options", "");
      for (auto& [key, value] : options.items()) settings.set(key, value, "option");
    } else {
      if (!part.filename.empty() && file_fields().count(part.name) == 0)
        bad(400, "unexpected file part '" + part.name + "'", part.name,
            "files go in image, example_image and example_label");
      settings.set(part.name, part.content, "field");
    }
  }
  for (const auto& [name, value] : query) settings.set(name, value, "URL parameter");

  if (!image)
    bad(400, "no 'image' file in the form", "image",
        "add the query image as a file part named image");
  req.image = to_upload(*image, "image");
  if (example_images.size() != example_labels.size())
    bad(400,
        std::to_string(example_images.size()) + " example_image but " +
            std::to_string(example_labels.size()) + " example_label parts",
        example_images.size() > example_labels.size() ? "example_label" : "example_image",
        "send examples as pairs: each example_image followed by its example_label");
  if (static_cast<int>(example_images.size()) > limits.max_examples)
    bad(400, "too many examples (" + std::to_string(example_images.size()) + ")", "example_image",
        "send at most " + std::to_string(limits.max_examples) + " pairs");
  for (size_t i = 0; i < example_images.size(); ++i) {
    const std::string index = "[" + std::to_string(i) + "]";
    req.examples.emplace_back(to_upload(*example_images[i], "example_image" + index),
                              to_upload(*example_labels[i], "example_label" + index));
  }

  req.text = settings.text("text", "");
  if (req.text.size() > limits.max_text_bytes)
    bad(400, "'text' is too long (" + std::to_string(req.text.size()) + " bytes)", "text",
        "keep the instruction under " + std::to_string(limits.max_text_bytes) + " bytes");
  auto& o = req.options;
  o.threshold = settings.number("threshold", o.threshold, 0.0, 1.0, false);
  o.ddim_steps =
      static_cast<int>(settings.number("steps", o.ddim_steps, 1, limits.max_steps, true));
  o.num_samples =
      static_cast<int>(settings.number("samples", o.num_samples, 1, limits.max_samples, true));
  o.seed = static_cast<uint64_t>(
      settings.number("seed", 0, 0, 9007199254740992.0, true));  // 2^53: exact in JSON
  o.slices_per_example =
      static_cast<int>(settings.number("slices_per_example", o.slices_per_example, 1, 64, true));
  o.memory_examples = static_cast<int>(settings.number("memory_examples", o.memory_examples, 0, 64, true));
  o.memory_choice = lower(settings.text("memory_choice", o.memory_choice));
  if (!data::is_memory_choice(o.memory_choice))
    bad(400, "unknown memory_choice '" + o.memory_choice + "'", "memory_choice", data::memory_choices_hint());
  req.label = static_cast<int>(settings.number("label", -1, -1, 65535, true));
  o.modality = settings.text("modality", "");
  o.postprocess = settings.list("post", {});
  for (const auto& step : o.postprocess)
    if (!infer::is_postprocess_step(step))
      bad(400, "unknown post-processing step '" + step + "'", "post", infer::postprocess_steps_hint());

  const std::string format = lower(settings.text("format", "auto"));
  if (format == "nifti" || format == "nii.gz" || format == "nii") {
    req.format = MaskFormat::kNifti;
  } else if (format == "png") {
    req.format = MaskFormat::kPng;
  } else if (format != "auto") {
    bad(400, "unknown format '" + format + "'", "format",
        "use nifti or png (default: png for 2D, nifti for 3D)");
  }
  const std::string response = lower(settings.text("response", "json"));
  if (response != "json" && response != "mask")
    bad(400, "unknown response '" + response + "'", "response",
        "use json (default) or mask (raw mask bytes)");
  req.raw = response == "mask";
  if (settings.has("include")) {
    req.include.clear();
    for (const auto& item : settings.list("include", {})) {
      if (item == "none") continue;
      if (item != "probability" && item != "uncertainty" && item != "image")
        bad(400, "unknown include '" + item + "'", "include",
            "use any of probability, uncertainty, image, or none");
      req.include.insert(item);
    }
  }
  return req;
}

std::string base64_encode(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t n = (uint32_t(uint8_t(bytes[i])) << 16) |
                       (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(n >> shift) & 63]);
  }
  if (i < bytes.size()) {
    uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool secrets_equal(const std::string& presented, const std::string& expected) {
  // Walk the expected secret's length whatever the presented one is, and fold every difference
  // (and the length mismatch) into one accumulator: no early exit.
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | (p ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

}  // namespace segicl::serve
