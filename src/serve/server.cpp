// The HTTP server of `segicl serve`: routes, bearer auth, upload limit, admission queue, and the
// one boundary where every exception becomes a JSON error. Model work is infer::Segmenter's; this
// file only moves bytes between HTTP and files. Not TLS (put a reverse proxy in front for that).
#include "segicl/serve/server.h"

#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "segicl/core/atomic_file.h"
#include "segicl/core/log.h"
#include "segicl/infer/postprocess.h"
#include "segicl/infer/segmenter.h"
#include "segicl/io/volume.h"
#include "segicl/models/checkpoint.h"
#include "segicl/models/config.h"

#ifndef SEGICL_SOURCE_DIR
#define SEGICL_SOURCE_DIR "."
#endif

namespace segicl::serve {

// ---- AdmissionQueue ------------------------------------------------------------------------

AdmissionQueue::AdmissionQueue(int workers, int waiting)
    : workers_(workers), max_waiting_(waiting) {
  if (workers < 1 || waiting < 0)
    SEGICL_THROW(UsageError, "the queue needs at least one worker and no negative queue length", "",
                 "use --workers >= 1 and --queue >= 0");
}

std::optional<AdmissionQueue::Ticket> AdmissionQueue::try_admit() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (running_ + waiting_ >= workers_ + max_waiting_) return std::nullopt;
  ++waiting_;
  return Ticket(this);
}

int AdmissionQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

int AdmissionQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_;
}

AdmissionQueue::Ticket::Ticket(Ticket&& other) noexcept
    : queue_(other.queue_), running_(other.running_) {
  other.queue_ = nullptr;
}

void AdmissionQueue::Ticket::wait_turn() {
  if (running_ || !queue_) return;
  std::unique_lock<std::mutex> lock(queue_->mutex_);
  queue_->turn_.wait(lock, [&] { return queue_->running_ < queue_->workers_; });
  --queue_->waiting_;
  ++queue_->running_;
  running_ = true;
}

AdmissionQueue::Ticket::~Ticket() {
  if (!queue_) return;
  {
    std::lock_guard<std::mutex> lock(queue_->mutex_);
    if (running_) {
      --queue_->running_;
    } else {
      --queue_->waiting_;
    }
  }
  queue_->turn_.notify_one();
}

// ---- helpers -------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ErrorReply& reply) {
  res.status = reply.status;
  res.set_content(error_json(reply), "application/json");
}

// A private scratch folder per request (mkdtemp: mode 0700, unique), removed on every exit path.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "segicl-serve-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      SEGICL_THROW(IoError, "cannot create a temporary folder", pattern,
                   "check TMPDIR is writable and not full");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;  // best effort: a leftover folder in TMPDIR is harmless
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Keeps [A-Za-z0-9._-] of a client file name's stem for Content-Disposition and JSON names.
std::string safe_stem(const std::string& filename, const std::string& extension) {
  std::string base = fs::path(filename).filename().string();
  if (base.size() >= extension.size()) base.resize(base.size() - extension.size());
  std::string out;
  for (char c : base)
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')
      out.push_back(c);
  if (out.empty() || out[0] == '.') out = "image" + out;
  return out.substr(0, 80);
}

// Replaces every occurrence of `from` in `text`: error messages must name the client's file, not
// our scratch path.
std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// An error raised while processing `upload`, with our scratch path swapped for its file name.
ErrorReply upload_error(const std::exception& e, const Upload& upload,
                        const std::string& scratch_path) {
  ErrorReply reply = error_reply(e, upload.field);
  reply.error = replace_all(reply.error, scratch_path, upload.filename);
  reply.hint = replace_all(reply.hint, scratch_path, upload.filename);
  if (reply.status == 422 && reply.error.find(upload.filename) == std::string::npos)
    reply.error = upload.filename + ": " + reply.error;
  return reply;
}

struct EncodedFile {
  std::string filename, media_type, format, bytes;
};

// Name, format and media type of a file in `format`; the caller writes it and fills `bytes`.
EncodedFile describe_file(MaskFormat format, const std::string& stem) {
  EncodedFile f;
  const bool png = format == MaskFormat::kPng;
  f.format = png ? "png" : "nifti";
  f.media_type = png ? "image/png" : "application/gzip";
  f.filename = stem + (png ? ".png" : ".nii.gz");
  return f;
}

EncodedFile encode_labels(const io::LabelMap& mask, MaskFormat format, const fs::path& dir,
                          const std::string& stem) {
  EncodedFile f = describe_file(format, stem);
  const auto path = (dir / f.filename).string();
  io::write_labels(mask, path);
  f.bytes = read_file(path);
  return f;
}

// Float maps: NIfTI keeps the values; PNG stores round(255 * clamp(v, 0, 1)) (as `segicl segment`).
EncodedFile encode_map(io::Volume map, MaskFormat format, const fs::path& dir,
                       const std::string& stem) {
  EncodedFile f = describe_file(format, stem);
  if (format == MaskFormat::kPng)
    for (auto& v : map.voxels) v = std::round(std::clamp(v, 0.0f, 1.0f) * 255.0f);
  const auto path = (dir / f.filename).string();
  io::write_image(map, path);
  f.bytes = read_file(path);
  return f;
}

Json file_json(const EncodedFile& f) {
  return Json{{"filename", f.filename},
              {"media_type", f.media_type},
              {"format", f.format},
              {"bytes", f.bytes.size()},
              {"base64", base64_encode(f.bytes)}};
}

Json grid_json(const io::LabelMap& mask) {
  const auto& g = mask.geometry;
  return Json{{"dims", mask.dims},  {"size", mask.size},        {"spacing", g.spacing},
              {"origin", g.origin}, {"direction", g.direction}, {"spacing_known", g.spacing_known}};
}

bool is_image_name(const std::string& name) {
  const auto ext = file_extension(name);
  const auto& known = upload_extensions();
  return std::find(known.begin(), known.end(), ext) != known.end();
}

// The bundled samples: DATASET/images/NAME with DATASET/labels/NAME, sorted.
struct Sample {
  std::string dataset, file;
  fs::path image, labels;
  Json info;
};

std::vector<Sample> scan_samples(const std::string& root) {
  std::vector<Sample> out;
  if (root.empty() || !fs::is_directory(root)) return out;
  std::vector<fs::path> datasets;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) datasets.push_back(entry.path());
  std::sort(datasets.begin(), datasets.end());
  for (const auto& ds : datasets) {
    if (!fs::is_directory(ds / "images") || !fs::is_directory(ds / "labels")) continue;
    std::vector<fs::path> images;
    for (const auto& entry : fs::directory_iterator(ds / "images"))
      if (entry.is_regular_file() && is_image_name(entry.path().filename().string()))
        images.push_back(entry.path());
    std::sort(images.begin(), images.end());
    for (const auto& image : images) {
      Sample s;
      s.dataset = ds.filename().string();
      s.file = image.filename().string();
      s.image = image;
      s.labels = ds / "labels" / s.file;
      if (!fs::is_regular_file(s.labels)) continue;
      const std::string base = "/v1/samples/" + s.dataset;
      s.info = Json{{"id", s.dataset + "/" + s.file},
                    {"dataset", s.dataset},
                    {"name", safe_stem(s.file, file_extension(s.file))},
                    {"file", s.file},
                    {"image_url", base + "/images/" + s.file},
                    {"label_url", base + "/labels/" + s.file}};
      if (io::available()) {
        try {
          const auto labels = io::read_labels(s.labels.string());
          std::set<int> values(labels.labels.begin(), labels.labels.end());
          values.erase(0);
          s.info["labels"] = values;
          s.info["dims"] = labels.dims;
          s.info["size"] = labels.size;
        } catch (const Error& e) {
          log::get("serve")->warn("sample {} skipped: {}", s.labels.string(), e.message());
          continue;
        }
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace

// ---- Server --------------------------------------------------------------------------------

struct Server::Impl {
  ServerOptions options;
  infer::Segmenter segmenter;
  Json model_info;
  AdmissionQueue queue;
  std::vector<Sample> samples;
  httplib::Server http;
  int port = -1;
  bool bound = false;

  explicit Impl(ServerOptions o)
      : options(std::move(o)),
        segmenter(options.model, infer::resolve_device(options.device)),
        queue(options.workers, options.queue) {}

  void describe_model() {
    const auto meta = models::read_checkpoint_meta(options.model);
    const auto& config = segmenter.config();
    model_info = Json{{"checkpoint", fs::path(options.model).filename().string()},
                      {"architecture", config.architecture},
                      {"parameters", models::count_parameters(config)},
                      {"resolution", config.resolution},
                      {"in_channels", config.in_channels},
                      {"max_context", segmenter.max_context()},
                      {"device", segmenter.device().str()},
                      {"stage", meta.value("stage", 0)},
                      {"step", meta.value("step", static_cast<int64_t>(0))},
                      {"weights_dtype", meta.value("weights_dtype", "")},
                      {"created", meta.value("created", "")},
                      {"config", meta.value("config", Json::object())}};
    // Structures a text-only request can name and get recalled examples for (exemplar memory).
    model_info["memory_structures"] = segmenter.memory() ? Json(segmenter.memory()->structures()) : Json::array();
    // The preset name lives in the training options; checkpoints made outside `segicl train`
    // (tests, exports of old runs) have none.
    model_info["preset"] =
        meta.contains("train") && meta["train"].is_object() && meta["train"].contains("preset")
            ? meta["train"]["preset"]
            : Json(nullptr);
    // Tasks of the training pack (`pack_header`): dataset, label value and name of each structure.
    model_info["labels_seen_in_training"] = meta.value("pack_header", Json::array());
  }

  bool authorized(const httplib::Request& req) const {
    if (options.token.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.compare(0, prefix.size(), prefix) != 0) return false;
    return secrets_equal(header.substr(prefix.size()), options.token);
  }

  void health(const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              Json{{"status", "ok"},
                   {"model_loaded", true},
                   {"queue",
                    {{"running", queue.running()},
                     {"waiting", queue.waiting()},
                     {"capacity", queue.capacity()}}}});
  }

  void list_samples(const httplib::Request&, httplib::Response& res) {
    Json list = Json::array();
    for (const auto& s : samples) list.push_back(s.info);
    send_json(res, 200, Json{{"samples", list}});
  }

  void sample_file(const httplib::Request& req, httplib::Response& res) {
    const std::string dataset = req.matches[1], kind = req.matches[2], file = req.matches[3];
    // Only files of the scanned catalogue are served, so no request path reaches the filesystem.
    for (const auto& s : samples) {
      if (s.dataset != dataset || s.file != file) continue;
      res.set_content(read_file((kind == "images" ? s.image : s.labels).string()),
                      "application/octet-stream");
      res.set_header("Content-Disposition", "attachment; filename=\"" + s.file + "\"");
      return;
    }
    send_error(res, {404, "no bundled sample " + dataset + "/" + kind + "/" + file, "",
                     "GET /v1/samples lists them", "RequestError"});
  }

  void segment(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    if (!req.is_multipart_form_data())
      throw RequestError(400, "expected a multipart/form-data body", "",
                         "send the image as a file part, e.g. curl -F image=@ct.nii.gz -F "
                         "text='segment the liver'");
    std::vector<FormPart> parts;
    for (const auto& [name, part] : req.files)
      parts.push_back({name, part.filename, part.content_type, part.content});
    std::multimap<std::string, std::string> query(req.params.begin(), req.params.end());
    const SegmentRequest request = parse_segment_request(parts, query, options.limits);

    auto ticket = queue.try_admit();
    if (!ticket) {
      res.set_header("Retry-After", std::to_string(options.retry_after_s));
      throw RequestError(
          503, "the server is busy (" + std::to_string(queue.capacity()) + " requests admitted)",
          "", "retry after " + std::to_string(options.retry_after_s) + " s");
    }
    ticket->wait_turn();
    const double queue_seconds = seconds_since(start);

    // io reads files by path: each upload goes to the request's private folder under a name we
    // choose (field + allow-listed extension), never the client's name.
    const auto decode_start = Clock::now();
    ScratchDir scratch;
    auto store = [&](const Upload& up) {
      std::string name = up.field;
      std::replace(name.begin(), name.end(), '[', '_');
      name.erase(std::remove(name.begin(), name.end(), ']'), name.end());
      const auto path = (scratch.path() / (name + up.extension)).string();
      std::ofstream(path, std::ios::binary)
          .write(up.content.data(), static_cast<std::streamsize>(up.content.size()));
      return path;
    };
    auto read_upload = [&](const Upload& up, auto&& read) {
      const auto path = store(up);
      try {
        return read(path);
      } catch (const std::exception& e) {
        const ErrorReply reply = upload_error(e, up, path);
        throw RequestError(reply.status, reply.error, up.field, reply.hint);
      }
    };
    const io::Volume query_image =
        read_upload(request.image, [](const std::string& p) { return io::read_image(p); });
    std::vector<infer::Example> examples;
    for (const auto& [image_up, label_up] : request.examples) {
      infer::Example ex;
      ex.image = read_upload(image_up, [](const std::string& p) { return io::read_image(p); });
      ex.labels = read_upload(label_up, [](const std::string& p) { return io::read_labels(p); });
      ex.label = request.label;
      ex.name = label_up.filename;
      examples.push_back(std::move(ex));
    }
    const MaskFormat format = request.format != MaskFormat::kAuto
                                  ? request.format
                                  : (query_image.dims == 2 ? MaskFormat::kPng : MaskFormat::kNifti);
    if (format == MaskFormat::kPng && query_image.dims != 2)
      throw RequestError(400, "format png needs a 2D image; this one is a volume", "format",
                         "use format=nifti (the default for volumes)");
    const double decode_seconds = seconds_since(decode_start);

    infer::SegmentResult result;
    try {
      result = segmenter.segment(query_image, examples, request.text, request.options);
    } catch (const std::exception& e) {
      // Name the example pair at fault: the Segmenter reports it by Example::name.
      std::string field;
      if (const auto* se = dynamic_cast<const Error*>(&e); se && !se->file().empty()) {
        for (size_t i = 0; i < examples.size(); ++i)
          if (examples[i].name == se->file()) {
            field = "example_label[" + std::to_string(i) + "]";
            break;
          }
      }
      ErrorReply reply = error_reply(e, field);
      if (dynamic_cast<const Error*>(&e) == nullptr)
        log::get("serve")->error("segment failed: {}", e.what());
      throw RequestError(reply.status, reply.error, reply.field, reply.hint);
    }
    ticket.reset();  // the model work is done: let the next request run while we encode

    const auto encode_start = Clock::now();
    const std::string stem = safe_stem(request.image.filename, request.image.extension);
    const EncodedFile mask = encode_labels(result.mask, format, scratch.path(), stem + "_mask");
    const int64_t foreground = infer::count_foreground(result.mask);
    double unc_sum = 0, unc_max = 0;
    for (float v : result.uncertainty.voxels) {
      unc_sum += v;
      unc_max = std::max<double>(unc_max, v);
    }
    const double unc_mean =
        result.uncertainty.voxels.empty() ? 0.0 : unc_sum / result.uncertainty.voxels.size();
    char number[32];
    auto fmt = [&](double v) {
      std::snprintf(number, sizeof(number), "%.4f", v);
      return std::string(number);
    };

    if (request.raw) {
      const double total = seconds_since(start);
      res.set_header("Content-Disposition", "attachment; filename=\"" + mask.filename + "\"");
      res.set_header("X-Segicl-Foreground-Voxels", std::to_string(foreground));
      res.set_header("X-Segicl-Num-Context", std::to_string(result.num_context));
      if (!result.recalled_tasks.empty()) {
        std::string recalled;
        for (const auto& task : result.recalled_tasks) recalled += (recalled.empty() ? "" : ",") + task;
        res.set_header("X-Segicl-Recalled-Tasks", recalled);
      }
      res.set_header("X-Segicl-Uncertainty-Mean", fmt(unc_mean));
      res.set_header("X-Segicl-Uncertainty-Max", fmt(unc_max));
      res.set_header("X-Segicl-Queue-Seconds", fmt(queue_seconds));
      res.set_header("X-Segicl-Segment-Seconds", fmt(result.seconds));
      res.set_header("X-Segicl-Total-Seconds", fmt(total));
      res.status = 200;
      res.set_content(mask.bytes, mask.media_type);
      return;
    }
    Json body{{"mask", file_json(mask)},
              {"grid", grid_json(result.mask)},
              {"foreground_voxels", foreground},
              {"slices", result.slices},
              {"num_context", result.num_context},
              {"recalled_tasks", result.recalled_tasks},
              {"threshold", request.options.threshold},
              {"uncertainty", {{"mean", unc_mean}, {"max", unc_max}}},
              {"model", model_info["checkpoint"]}};
    if (request.include.count("uncertainty"))
      body["uncertainty"]["file"] =
          file_json(encode_map(result.uncertainty, format, scratch.path(), stem + "_uncertainty"));
    if (request.include.count("probability"))
      body["probability"] =
          file_json(encode_map(result.probability, format, scratch.path(), stem + "_probability"));
    if (request.include.count("image")) {
      // The query as float NIfTI on its own grid, so a viewer can show 2D uploads (PNG) and
      // their masks in one coordinate frame.
      io::Volume grey = query_image;
      if (grey.channels == 3) {
        io::Volume mono = grey;
        mono.channels = 1;
        mono.voxels.resize(grey.num_voxels());
        for (int64_t i = 0; i < grey.num_voxels(); ++i)
          mono.voxels[i] =
              (grey.voxels[3 * i] + grey.voxels[3 * i + 1] + grey.voxels[3 * i + 2]) / 3.0f;
        grey = std::move(mono);
      }
      body["image"] =
          file_json(encode_map(grey, MaskFormat::kNifti, scratch.path(), stem + "_image"));
      body["image"]["format"] = "nifti";
    }
    body["timing"] = {{"queue_seconds", queue_seconds},
                      {"decode_seconds", decode_seconds},
                      {"segment_seconds", result.seconds},
                      {"encode_seconds", seconds_since(encode_start)},
                      {"total_seconds", seconds_since(start)}};
    send_json(res, 200, body);
  }

  // Runs a route handler behind the boundary: nothing it throws escapes as a non-JSON reply.
  httplib::Server::Handler guarded(void (Impl::*handler)(const httplib::Request&,
                                                         httplib::Response&)) {
    return [this, handler](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*handler)(req, res);
      } catch (const std::exception& e) {
        const ErrorReply reply = error_reply(e);
        // A 503 from the full queue is backpressure working, not a server fault.
        if (reply.status >= 500 && reply.status != 503)
          log::get("serve")->error("{} {}: {}", req.method, req.path, e.what());
        send_error(res, reply);
      } catch (...) {
        log::get("serve")->error("{} {}: unknown exception", req.method, req.path);
        send_error(res, {500, "internal error while processing the request", "",
                         "see the server log", "InternalError"});
      }
    };
  }

  void install_routes() {
    auto logger = log::get("serve");
    // httplib's pool runs every connection; beyond the admission queue's capacity, extra threads
    // keep health/model answering while the model is busy. httplib 0.11 has no whole-request
    // deadline, so a client sending its body slowly holds a thread for as long as it likes; 12
    // such clients stalled a pool of 9 for 50 s (reports/RELIABILITY.md). A waiting thread costs
    // only its stack, so 32 more are kept for slow connections.
    constexpr int kSlowConnectionHeadroom = 32;
    const int threads = options.workers + options.queue + 4 + kSlowConnectionHeadroom;
    http.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    http.set_payload_max_length(static_cast<size_t>(options.max_upload_mb) * 1024 * 1024);
    // A client silent for 20 s is gone (a slow one still trickling bytes is not; see above).
    http.set_read_timeout(20);
    // One request per connection. Every connection holds one of the few pool threads while it
    // lives, so idle keep-alive connections starved the others under load; and a refusal made
    // before the body is read (413, 401) must end the connection, or the unread body would be
    // parsed as the next request. Loopback reconnects cost far less than a segmentation.
    http.set_keep_alive_max_count(1);

    // Runs after the headers, before httplib reads the body. The refusals below leave the body
    // unread; one request per connection (above) keeps it from being parsed as a next request.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // httplib reads and discards an oversized body before its 413, so a client announcing 1 GB
      // held a thread for as long as it cared to send. Far over the limit (> 2x) we answer from
      // the Content-Length and close; a client still sending then sees a broken pipe, a price
      // only for such uploads: one a little over the limit is drained and gets a clean 413.
      const uint64_t limit = static_cast<uint64_t>(options.max_upload_mb) * 1024 * 1024;
      if (req.get_header_value<uint64_t>("Content-Length") > 2 * limit) {
        send_error(res,
                   {413,
                    "request body is larger than the upload limit (" +
                        std::to_string(options.max_upload_mb) + " MiB)",
                    "", "send smaller files, or start the server with a larger --max-upload-mb",
                    "RequestError"});
        return httplib::Server::HandlerResponse::Handled;
      }
      const bool api = req.path.rfind("/v1/", 0) == 0;
      if (!api || req.path == "/v1/health" || authorized(req))
        return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer realm=\"segicl\"");
      send_error(
          res,
          {401, req.has_header("Authorization") ? "invalid bearer token" : "missing bearer token",
           "Authorization",
           "send the header 'Authorization: Bearer <token>' with the token given to segicl serve "
           "--token",
           "RequestError"});
      return httplib::Server::HandlerResponse::Handled;
    });

    http.Get("/v1/health", guarded(&Impl::health));
    http.Get("/v1/model", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, model_info);
    });
    http.Get("/v1/samples", guarded(&Impl::list_samples));
    http.Get(R"(/v1/samples/([A-Za-z0-9_.-]+)/(images|labels)/([A-Za-z0-9_.-]+))",
             guarded(&Impl::sample_file));
    http.Post("/v1/segment", guarded(&Impl::segment));

    if (!options.web_root.empty()) {
      http.set_mount_point("/", options.web_root);
      http.set_file_extension_and_mimetype_mapping("mjs", "text/javascript");
      http.set_file_extension_and_mimetype_mapping("map", "application/json");
    }

    // Replies httplib makes itself (404, 413, 400 for a malformed body) get our JSON body too.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          ErrorReply reply{res.status, "", "", "", "RequestError"};
          switch (res.status) {
            case 413:
              reply.error = "request body is larger than the upload limit (" +
                            std::to_string(options.max_upload_mb) + " MiB)";
              reply.hint = "send smaller files, or start the server with a larger --max-upload-mb";
              break;
            case 404:
              reply.error = "no such endpoint: " + req.method + " " + req.path;
              reply.hint = req.path == "/" || req.path == "/index.html"
                               ? "the web page was not found: build target segicl_web (or run "
                                 "scripts/vendor-web.sh)"
                               : "see docs/serve.md for the endpoints";
              break;
            case 400:
              reply.error = "malformed request (bad headers or multipart body)";
              reply.hint = "send multipart/form-data with a boundary, e.g. curl -F image=@FILE";
              break;
            default:
              reply.error = "HTTP " + std::to_string(res.status);
              break;
          }
          send_error(res, reply);
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          // Safety net only: every route is wrapped by guarded().
          ErrorReply reply{500, "internal error while processing the request", "",
                           "see the server log", "InternalError"};
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            reply = error_reply(e);
          } catch (...) {
            log::get("serve")->error("{} {}: unknown exception", req.method, req.path);
          }
          send_error(res, reply);
        });
    http.set_logger([logger](const httplib::Request& req, const httplib::Response& res) {
      // Multipart bodies are parsed into req.files and leave req.body empty: log the header.
      const std::string length = req.get_header_value("Content-Length");
      logger->info("{} {} {} ({} bytes in, {} out)", req.method, req.path, res.status,
                   length.empty() ? "0" : length, res.body.size());
    });
  }
};

Server::Server(ServerOptions options) {
  if (options.port < 0 || options.port > 65535)
    SEGICL_THROW(UsageError, "port must be in [0, 65535], got " + std::to_string(options.port), "",
                 "");
  if (options.max_upload_mb < 1)
    SEGICL_THROW(UsageError, "--max-upload-mb must be at least 1", "", "");
  if (options.model.empty()) SEGICL_THROW(UsageError, "no model given", "", "pass --model PATH");
  impl_ = std::make_unique<Impl>(std::move(options));
  impl_->describe_model();
  impl_->samples = scan_samples(impl_->options.samples_root);
  impl_->install_routes();
  auto logger = log::get("serve");
  const auto& o = impl_->options;
  if (o.web_root.empty()) {
    logger->warn(
        "no web page found (build target segicl_web, or set SEGICL_WEB): only the API is served");
  } else if (!fs::exists(fs::path(o.web_root) / "vendor" / "niivue" / "index.js")) {
    logger->warn("{} lacks vendor/niivue: the page cannot show images (run scripts/vendor-web.sh)",
                 o.web_root);
  }
  logger->info(
      "model {} ({} parameters), {} worker(s), queue {}, upload limit {} MiB, {} sample(s), page "
      "{}",
      o.model, impl_->model_info["parameters"].get<int64_t>(), o.workers, o.queue, o.max_upload_mb,
      impl_->samples.size(), o.web_root.empty() ? "none" : o.web_root);
}

Server::~Server() = default;

int Server::bind() {
  auto& o = impl_->options;
  const bool loopback = o.host == "127.0.0.1" || o.host == "localhost" || o.host == "::1";
  if (!loopback && o.token.empty())
    log::get("serve")->warn(
        "binding {} without --token: anyone who can reach this address can use the model", o.host);
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
  } else {
    impl_->port = impl_->http.bind_to_port(o.host, o.port) ? o.port : -1;
  }
  if (impl_->port < 0)
    SEGICL_THROW(IoError, "cannot listen on " + o.host + ":" + std::to_string(o.port), "",
                 "is the port in use or the address not local? try another --port or --host");
  impl_->bound = true;
  return impl_->port;
}

void Server::run() {
  if (!impl_->bound) bind();
  log::get("serve")->info("listening on http://{}:{}/", impl_->options.host, impl_->port);
  impl_->http.listen_after_bind();
}

void Server::stop() { impl_->http.stop(); }

int Server::port() const { return impl_->port; }

std::string find_web_root(const std::string& executable_path) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("SEGICL_WEB"); env && *env) candidates.emplace_back(env);
  if (!executable_path.empty())
    candidates.push_back(fs::path(executable_path).parent_path() / "web");
  candidates.push_back(fs::path(SEGICL_SOURCE_DIR) / "web");
  for (const auto& c : candidates)
    if (fs::is_regular_file(c / "index.html")) return c.string();
  return "";
}

std::string find_samples_root() {
  if (const char* env = std::getenv("SEGICL_SAMPLES"); env && *env) return env;
  const fs::path bundled = fs::path(SEGICL_SOURCE_DIR) / "data" / "samples";
  return fs::is_directory(bundled) ? bundled.string() : "";
}

}  // namespace segicl::serve
