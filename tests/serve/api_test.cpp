// Unit tests of segicl_serve's request model (api.h) and admission queue: form parsing and
// validation, error replies and their JSON, base64, token comparison. No sockets, no model.
#include "segicl/serve/api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "segicl/serve/server.h"

namespace segicl::serve {
namespace {

using Json = nlohmann::json;
using Query = std::multimap<std::string, std::string>;

FormPart file(const std::string& name, const std::string& filename,
              const std::string& content = "bytes") {
  return {name, filename, "application/octet-stream", content};
}
FormPart field(const std::string& name, const std::string& value) { return {name, "", "", value}; }

// Runs the parser and returns the RequestError it throws (fails the test if it does not).
RequestError refusal(const std::vector<FormPart>& parts, const Query& query = {}) {
  try {
    parse_segment_request(parts, query);
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a RequestError";
  return RequestError(0, "", "", "");
}

TEST(ParseSegmentRequest, ImageWithDefaultsParses) {
  auto req = parse_segment_request({file("image", "ct.NII.GZ")}, {});
  EXPECT_EQ(req.image.field, "image");
  EXPECT_EQ(req.image.extension, ".nii.gz");
  EXPECT_EQ(req.image.content, "bytes");
  EXPECT_TRUE(req.examples.empty());
  EXPECT_EQ(req.text, "");
  EXPECT_EQ(req.label, -1);
  EXPECT_EQ(req.format, MaskFormat::kAuto);
  EXPECT_FALSE(req.raw);
  EXPECT_EQ(req.include, std::set<std::string>{"uncertainty"});
  EXPECT_DOUBLE_EQ(req.options.threshold, infer::SegmentOptions{}.threshold);
}

TEST(ParseSegmentRequest, ExamplePairsKeepTheirOrderAndIndexedFieldNames) {
  auto req =
      parse_segment_request({file("image", "q.png"), file("example_image", "a.png"),
                             field("text", "liver"), file("example_label", "a_mask.png"),
                             file("example_image", "b.png"), file("example_label", "b_mask.png")},
                            {});
  ASSERT_EQ(req.examples.size(), 2u);
  EXPECT_EQ(req.examples[1].first.filename, "b.png");
  EXPECT_EQ(req.examples[1].second.field, "example_label[1]");
  EXPECT_EQ(req.text, "liver");
}

TEST(ParseSegmentRequest, OptionsComeFromFieldsJsonAndUrl) {
  auto req = parse_segment_request(
      {file("image", "q.nii"), field("threshold", "0.25"),
       field("options", R"({"steps": 3, "samples": 2, "post": ["largest-cc"], "memory_examples": 5,
                             "memory_choice": "Similar"})")},
      Query{{"format", "png"}, {"label", "4"}, {"include", "probability,image"}});
  EXPECT_DOUBLE_EQ(req.options.threshold, 0.25);
  EXPECT_EQ(req.options.ddim_steps, 3);
  EXPECT_EQ(req.options.num_samples, 2);
  EXPECT_EQ(req.options.memory_examples, 5);
  EXPECT_EQ(req.options.memory_choice, "similar");
  EXPECT_EQ(req.options.postprocess, std::vector<std::string>{"largest-cc"});
  EXPECT_EQ(req.format, MaskFormat::kPng);
  EXPECT_EQ(req.label, 4);
  EXPECT_EQ(req.include, (std::set<std::string>{"probability", "image"}));
}

TEST(ParseSegmentRequest, ResponseMaskAsksForRawBytes) {
  EXPECT_TRUE(parse_segment_request({file("image", "q.png")}, Query{{"response", "mask"}}).raw);
}

TEST(ParseSegmentRequest, MissingImageIs400OnImage) {
  auto e = refusal({field("text", "liver")});
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.field(), "image");
}

TEST(ParseSegmentRequest, ImageSentAsPlainFieldIs400) {
  auto e = refusal({field("image", "not a file")});
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.field(), "image");
}

TEST(ParseSegmentRequest, EmptyUploadIs400) {
  EXPECT_EQ(refusal({file("image", "q.png", "")}).status(), 400);
}

TEST(ParseSegmentRequest, UnknownFileTypeIs415NamingTheField) {
  auto e = refusal(
      {file("image", "q.png"), file("example_image", "notes.txt"), file("example_label", "m.png")});
  EXPECT_EQ(e.status(), 415);
  EXPECT_EQ(e.field(), "example_image[0]");
  EXPECT_NE(e.message().find("notes.txt"), std::string::npos) << e.message();
  EXPECT_NE(e.hint().find(".nii.gz"), std::string::npos) << e.hint();
  EXPECT_EQ(refusal({file("image", "README")}).status(), 415);
}

TEST(ParseSegmentRequest, TiffUploadsAreTakenUnderTheirExtension) {
  // Refused with 415 until io checked TIFF directories before ITK's reader (RELIABILITY bug 25).
  EXPECT_EQ(parse_segment_request({file("image", "q.tif")}, {}).image.extension, ".tif");
  EXPECT_EQ(parse_segment_request({file("image", "q.TIFF")}, {}).image.extension, ".tiff");
  auto req = parse_segment_request(
      {file("image", "q.png"), file("example_image", "a.tiff"), file("example_label", "a.tif")}, {});
  EXPECT_EQ(req.examples.at(0).first.extension, ".tiff");
  EXPECT_EQ(req.examples.at(0).second.extension, ".tif");
}

TEST(ParseSegmentRequest, UnpairedExampleIs400OnTheMissingSide) {
  auto e = refusal({file("image", "q.png"), file("example_image", "a.png")});
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.field(), "example_label");
}

TEST(ParseSegmentRequest, OutOfRangeAndNonNumericOptionsAre400WithTheRange) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"threshold", "1.5"},
                                                        {"threshold", "abc"},
                                                        {"steps", "0"},
                                                        {"steps", "2.5"},
                                                        {"samples", "1000"},
                                                        {"label", "-2"},
                                                        {"memory_examples", "65"},
                                                        {"threshold", "nan"},
                                                        {"steps", ""}}) {
    SCOPED_TRACE(name + "=" + value);
    auto e = refusal({file("image", "q.png"), field(name, value)});
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.field(), name);
    EXPECT_NE(e.hint().find("expected"), std::string::npos) << e.hint();
  }
}

TEST(ParseSegmentRequest, UnknownRepeatedOrMalformedOptionsAre400) {
  EXPECT_EQ(refusal({file("image", "q.png"), field("treshold", "0.5")}).field(), "treshold");
  EXPECT_EQ(
      refusal({file("image", "q.png"), field("steps", "2"), field("options", R"({"steps": 3})")})
          .field(),
      "steps");
  EXPECT_EQ(refusal({file("image", "q.png"), field("options", "{not json")}).field(), "options");
  EXPECT_EQ(refusal({file("image", "q.png"), field("options", "[1, 2]")}).field(), "options");
  EXPECT_EQ(refusal({file("image", "q.png"), field("format", "jpeg")}).field(), "format");
  EXPECT_EQ(refusal({file("image", "q.png"), field("post", "smooth")}).field(), "post");
  EXPECT_EQ(refusal({file("image", "q.png"), field("memory_choice", "best")}).field(), "memory_choice");
  EXPECT_EQ(refusal({file("image", "q.png"), field("include", "everything")}).field(), "include");
  EXPECT_EQ(refusal({file("image", "q.png"), file("image", "r.png")}).field(), "image");
  EXPECT_EQ(refusal({file("image", "q.png"), file("attachment", "r.png")}).field(), "attachment");
}

TEST(ParseSegmentRequest, LimitsCapExamplesStepsAndText) {
  RequestLimits limits;
  limits.max_examples = 1;
  limits.max_steps = 8;
  limits.max_text_bytes = 5;
  auto refuse = [&](std::vector<FormPart> parts) {
    try {
      parse_segment_request(parts, {}, limits);
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string("accepted");
  };
  EXPECT_EQ(refuse({file("image", "q.png"), file("example_image", "a.png"),
                    file("example_label", "a.png"), file("example_image", "b.png"),
                    file("example_label", "b.png")}),
            "example_image");
  EXPECT_EQ(refuse({file("image", "q.png"), field("steps", "9")}), "steps");
  EXPECT_EQ(refuse({file("image", "q.png"), field("text", "segment the liver")}), "text");
  EXPECT_EQ(refuse({file("image", "q.png"), field("steps", "8")}), "accepted");
}

TEST(FileExtension, KeepsNiiGzWholeAndLowersCase) {
  EXPECT_EQ(file_extension("dir/Case_0000.NII.GZ"), ".nii.gz");
  EXPECT_EQ(file_extension("a.b.png"), ".png");
  EXPECT_EQ(file_extension("noext"), "");
  EXPECT_EQ(file_extension(".hidden"), "");
  EXPECT_EQ(file_extension("x.gz"), ".gz");
}

TEST(ErrorReply, RequestErrorKeepsStatusAndField) {
  auto r = error_reply(RequestError(413, "too big", "image", "smaller"));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.field, "image");
  EXPECT_EQ(r.hint, "smaller");
  EXPECT_EQ(r.kind, "RequestError");
}

TEST(ErrorReply, SegiclErrorsMapToClientOrServerStatuses) {
  EXPECT_EQ(error_reply(DataError("4D image", "f", "split it"), "image").status, 422);
  EXPECT_EQ(error_reply(DataError("4D image", "f", "split it"), "image").field, "image");
  EXPECT_EQ(error_reply(IoError("unreadable")).status, 422);
  EXPECT_EQ(error_reply(UsageError("bad option")).status, 400);
  EXPECT_EQ(error_reply(Error("torch failed")).status, 500);
  EXPECT_EQ(error_reply(DataError("x")).kind, "DataError");
}

TEST(ErrorReply, ForeignExceptionsAre500WithoutTheirText) {
  auto r = error_reply(std::runtime_error("/secret/path/model.pt: oops"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.error.find("/secret"), std::string::npos);
  EXPECT_FALSE(r.hint.empty());
}

TEST(ErrorJson, HasEveryKeyAndSurvivesInvalidUtf8) {
  auto j =
      Json::parse(error_json({422, "bad \xff file", "example_label[0]", "fix it", "DataError"}));
  EXPECT_EQ(j["status"], 422);
  EXPECT_EQ(j["field"], "example_label[0]");
  EXPECT_EQ(j["hint"], "fix it");
  EXPECT_EQ(j["kind"], "DataError");
  EXPECT_TRUE(j["error"].is_string());
}

TEST(Base64, MatchesRfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\x00\x80", 3)), "/wCA");
}

TEST(SecretsEqual, OnlyTheExactTokenMatches) {
  EXPECT_TRUE(secrets_equal("s3cret", "s3cret"));
  EXPECT_FALSE(secrets_equal("s3cres", "s3cret"));
  EXPECT_FALSE(secrets_equal("s3cre", "s3cret"));
  EXPECT_FALSE(secrets_equal("s3crett", "s3cret"));
  EXPECT_FALSE(secrets_equal("", "s3cret"));
}

TEST(AdmissionQueue, RefusesBeyondWorkersPlusWaiting) {
  AdmissionQueue queue(1, 1);
  auto first = queue.try_admit();
  auto second = queue.try_admit();
  ASSERT_TRUE(first && second);
  EXPECT_FALSE(queue.try_admit());
  first->wait_turn();
  EXPECT_EQ(queue.running(), 1);
  EXPECT_EQ(queue.waiting(), 1);
  first.reset();
  EXPECT_TRUE(queue.try_admit());  // a place freed (and the temporary ticket leaves again)
}

TEST(AdmissionQueue, WaiterRunsWhenTheWorkerFinishes) {
  AdmissionQueue queue(1, 1);
  auto first = queue.try_admit();
  first->wait_turn();
  auto second = queue.try_admit();
  ASSERT_TRUE(second);
  std::thread waiter([&] { second->wait_turn(); });
  first.reset();
  waiter.join();
  EXPECT_EQ(queue.running(), 1);
  EXPECT_EQ(queue.waiting(), 0);
}

TEST(AdmissionQueue, RejectsNoWorkers) { EXPECT_THROW(AdmissionQueue(0, 1), UsageError); }

}  // namespace
}  // namespace segicl::serve
