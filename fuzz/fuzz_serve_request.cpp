// Fuzz target: the server's request model (serve/api.h): a multipart form's parts and URL
// parameters, as cpp-httplib hands them over, through parse_segment_request (field names,
// repeated fields, the `options` JSON, numbers, lists, upload extensions), then error_reply and
// error_json on the refusal, as the HTTP handler does. The multipart byte parsing itself is
// cpp-httplib's, a prebuilt Debian library this build cannot instrument; bench/serve_load.sh sends
// it truncated and malformed bodies. Seeds: fuzz/corpus/fuzz_serve_request.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "segicl/serve/api.h"

namespace {

// Names the parser knows, so the fuzzer does not have to guess them byte by byte.
const char* const kNames[] = {"image", "example_image", "example_label", "options", "text",
                              "threshold", "steps", "samples", "seed", "label", "format", "post",
                              "modality", "slices_per_example", "include", "response"};
const char* const kFiles[] = {"ct.nii.gz", "us.png", "a.NII", "scan.mha", "x.nrrd", "", ".nii.gz",
                              "noext", "dir/x.tiff", "a.b.JPEG"};

std::string pick_name(FuzzedDataProvider& in) {
  if (in.ConsumeBool()) return in.ConsumeRandomLengthString(24);
  return kNames[in.ConsumeIntegralInRange<size_t>(0, std::size(kNames) - 1)];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<segicl::serve::FormPart> parts;
  std::multimap<std::string, std::string> query;
  const int num_parts = in.ConsumeIntegralInRange(0, 40);
  for (int i = 0; i < num_parts && in.remaining_bytes() > 0; ++i) {
    segicl::serve::FormPart part;
    part.name = pick_name(in);
    switch (in.ConsumeIntegralInRange(0, 2)) {
      case 0: break;  // a plain field
      case 1: part.filename = kFiles[in.ConsumeIntegralInRange<size_t>(0, std::size(kFiles) - 1)]; break;
      default: part.filename = in.ConsumeRandomLengthString(32);
    }
    part.content_type = in.ConsumeRandomLengthString(16);
    part.content = in.ConsumeRandomLengthString(512);
    if (in.ConsumeIntegralInRange(0, 3) == 0) {
      query.emplace(pick_name(in), in.ConsumeRandomLengthString(64));
    } else {
      parts.push_back(std::move(part));
    }
  }
  segicl::serve::RequestLimits limits;
  limits.max_examples = in.ConsumeIntegralInRange(0, 16);
  try {
    const auto request = segicl::serve::parse_segment_request(parts, query, limits);
    if (request.image.content.empty() || static_cast<int>(request.examples.size()) > limits.max_examples)
      __builtin_trap();
    segicl::serve::base64_encode(request.image.content);
  } catch (const segicl::Error& e) {
    const auto reply = segicl::serve::error_reply(e, "image");
    if (reply.status < 400 || reply.status > 599) __builtin_trap();
    segicl::serve::error_json(reply);
  }
  return 0;
}
