// The HTTP API's request and reply model, free of any HTTP library: parsing and validating a
// `POST /v1/segment` form into a SegmentRequest, and turning any exception into the JSON error
// body {error, field, hint, kind} with an HTTP status. Not the server (server.h) and not I/O.
#pragma once

#include <cstdint>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "segicl/core/error.h"
#include "segicl/infer/segmenter.h"

namespace segicl::serve {

// A client-side problem with its HTTP status and the form field it concerns ("image",
// "example_label[1]", "threshold", ...; empty when no single field is at fault).
class RequestError : public Error {
 public:
  RequestError(int status, std::string message, std::string field, std::string hint);
  int status() const { return status_; }
  const std::string& field() const { return field_; }
  const char* kind() const override { return "RequestError"; }

 private:
  int status_;
  std::string field_;
};

// What a failed request returns: an HTTP status and a JSON body.
struct ErrorReply {
  int status = 500;
  std::string error;  // one sentence for a person
  std::string field;  // form field at fault, "" if none
  std::string hint;   // what to do next, "" if nothing useful
  std::string kind;   // error category (RequestError, DataError, IoError, ...)
};

// Maps an exception to its reply. RequestError keeps its status and field. segicl errors map by
// category: UsageError/ConfigError/ShapeError 400, DataError/IoError/FormatError 422 (the client's
// file was readable but unusable, or unreadable); anything else is a 500 whose message does not
// leak internals. `field` names the input being processed when the error was raised (may be "").
ErrorReply error_reply(const std::exception& e, const std::string& field = {});

// {"error": ..., "field": ..., "hint": ..., "kind": ..., "status": ...} as compact JSON.
std::string error_json(const ErrorReply& reply);

// One part of a multipart form (a file or a plain field).
struct FormPart {
  std::string name;          // form field name
  std::string filename;      // client's file name; "" for a plain field
  std::string content_type;  // as sent; informational only (extensions decide the format)
  std::string content;       // raw bytes
};

// An uploaded image file, its field ("image", "example_image[0]", ...) and the format extension
// derived from its name (".nii.gz", ".png", ...), which decides how it is decoded.
struct Upload {
  std::string field;
  std::string filename;
  std::string extension;
  std::string content;
};

enum class MaskFormat { kAuto, kNifti, kPng };

// A validated segment request. Defaults match `segicl segment`.
struct SegmentRequest {
  Upload image;
  std::vector<std::pair<Upload, Upload>> examples;  // (example_image[i], example_label[i])
  std::string text;
  int label = -1;  // example label value marking the structure; -1: any non-zero label
  infer::SegmentOptions options;
  MaskFormat format = MaskFormat::kAuto;  // kAuto: PNG for 2D queries, NIfTI (.nii.gz) for 3D
  bool raw = false;                       // reply with the mask bytes, timing in headers
  std::set<std::string> include{"uncertainty"};  // extra maps in the JSON reply
};

// Limits a request is checked against (server flags).
struct RequestLimits {
  int max_examples = 16;  // example pairs per request
  int max_steps = 50;     // DDIM steps
  int max_samples = 16;   // diffusion samples
  size_t max_text_bytes = 2000;
};

// The image extensions accepted for uploads, lower case, e.g. ".nii.gz".
const std::vector<std::string>& upload_extensions();

// Parses a segment form. Fields: `image` (file, required), `example_image` + `example_label`
// (files, repeated, paired in order), `text`, `options` (a JSON object) and the single options
// `threshold`, `steps`, `samples`, `seed`, `label`, `format` (nifti|png), `post`
// (largest-cc,fill-holes), `modality`, `slices_per_example`, `include` (comma list of
// probability, uncertainty, image), `response` (json|mask). `query` holds URL parameters, read
// like fields; a field given twice (e.g. in `options` and as a field) is refused. Throws
// RequestError: 400 for a missing, repeated, unknown or out-of-range field; 415 for an upload whose
// extension is not an image format.
SegmentRequest parse_segment_request(const std::vector<FormPart>& parts,
                                     const std::multimap<std::string, std::string>& query,
                                     const RequestLimits& limits = {});

// Lower-case extension of a file name with ".nii.gz" kept whole; "" when there is none.
std::string file_extension(const std::string& filename);

// Standard base64 (RFC 4648, with padding), for files embedded in JSON replies.
std::string base64_encode(const std::string& bytes);

// Compares a presented secret with the expected one in time that does not depend on where they
// first differ (so a network client cannot guess the token byte by byte from reply latency).
bool secrets_equal(const std::string& presented, const std::string& expected);

}  // namespace segicl::serve
