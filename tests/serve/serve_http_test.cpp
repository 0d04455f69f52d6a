// End-to-end test of `segicl serve` (label: integration): starts the built binary on a free
// loopback port with a random-weight tiny checkpoint, then drives the HTTP API with cpp-httplib's
// client: health, model, 3D NIfTI and 2D PNG segmentations, and each bad input the product issue
// lists, checking every refusal is a JSON 4xx and that the server keeps serving afterwards.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "../infer/test_support.h"
#include "segicl/core/atomic_file.h"
#include "segicl/io/volume.h"
#include "server_process.h"

namespace segicl::serve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using infer::testing::blob_volume;
using infer::testing::oblique_geometry;
using infer::testing::temp_dir;
using infer::testing::tiny_checkpoint;

constexpr const char* kToken = "test-token-4f1c";
constexpr int kUploadLimitMb = 2;

std::string decode_base64(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  int bits = 0, buffer = 0;
  for (char c : text) {
    const int v = value(c);
    if (v < 0) continue;
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

// A NIfTI-1 file with dim[0] = 4 (3 time points), which segicl refuses to segment.
std::string four_d_nifti() {
  std::string header(352, '\0');
  auto put = [&](size_t offset, const auto& value) {
    std::memcpy(&header[offset], &value, sizeof(value));
  };
  put(0, int32_t{348});
  const int16_t dim[8] = {4, 4, 4, 4, 3, 1, 1, 1};
  for (int i = 0; i < 8; ++i) put(40 + 2 * i, dim[i]);
  put(70, int16_t{4});   // datatype int16
  put(72, int16_t{16});  // bits per voxel
  for (int i = 0; i < 8; ++i) put(76 + 4 * i, 1.0f);
  put(108, 352.0f);  // vox_offset
  std::memcpy(&header[344], "n+1\0", 4);
  return header + std::string(4 * 4 * 4 * 3 * 2, '\0');
}

// Sends `request` over a fresh loopback socket and reads until the server closes the connection
// (or `timeout` passes); returns what came back. For requests httplib's client cannot send.
std::string raw_exchange(int port, const std::string& request, std::chrono::seconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) reply.append(buffer, n);
  }
  ::close(fd);
  return reply;
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A refusal: the status, a JSON body with error/field/hint, and the field at fault.
Json expect_error(const httplib::Result& res, int status, const std::string& field) {
  EXPECT_TRUE(res) << "no reply: " << httplib::to_string(res.error());
  if (!res) return {};
  EXPECT_EQ(res->status, status) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << res->body;
  Json j = Json::parse(res->body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << res->body;
  if (j.is_discarded()) return {};
  EXPECT_TRUE(j.contains("error") && j.contains("field") && j.contains("hint")) << res->body;
  EXPECT_FALSE(j.value("error", "").empty()) << res->body;
  EXPECT_EQ(j.value("field", "?"), field) << res->body;
  EXPECT_EQ(j.value("status", 0), status) << res->body;
  return j;
}

class ServeHttp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!io::available()) return;
    dir_ = temp_dir() / "serve";
    fs::create_directories(dir_);
    make_files();
    server_ = new testing::ServerProcess();
    const std::string problem =
        server_->start({"--model", tiny_checkpoint(), "--token", kToken, "--max-upload-mb",
                        std::to_string(kUploadLimitMb), "--queue", "2", "--max-steps", "4"},
                       path("server.log"));
    ASSERT_EQ(problem, "");
    port_ = server_->port();
  }

  static void TearDownTestSuite() {
    if (!server_) return;
    const int status = server_->stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "server did not stop cleanly: " << status;
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    if (!io::available()) GTEST_SKIP() << "built without ITK";
    ASSERT_GT(port_, 0) << "server not running";
  }

  static void make_files() {
    auto [query, query_labels] = blob_volume({20, 24, 7}, oblique_geometry());
    query_3d_ = query;
    io::write_image(query, path("query.nii.gz"));
    auto [ex, ex_labels] = blob_volume({18, 18, 10}, io::Geometry{});
    io::write_image(ex, path("ex.nii.gz"));
    io::write_labels(ex_labels, path("ex_labels.nii.gz"));
    auto [small, small_labels] = blob_volume({16, 16, 10}, io::Geometry{});
    io::write_labels(small_labels, path("ex_labels_small.nii.gz"));
    io::LabelMap empty = ex_labels;
    std::fill(empty.labels.begin(), empty.labels.end(), 0);
    io::write_labels(empty, path("ex_labels_empty.nii.gz"));

    io::Geometry flat;
    flat.spacing_known = false;
    auto [q2, q2_labels] = blob_volume({40, 32, 1}, flat, 2, 1);
    query_2d_ = q2;
    io::write_image(q2, path("query.png"));
    auto [e2, e2_labels] = blob_volume({36, 36, 1}, flat, 2, 1);
    io::write_image(e2, path("ex.png"));
    io::write_labels(e2_labels, path("ex_labels.png"));
  }

  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static httplib::MultipartFormData part(const std::string& field, const std::string& file) {
    return {field, read_file(path(file)), file, "application/octet-stream"};
  }

  // A request segmenting `image` (a 2D upload) for label 1 with the one plane example of SetUp.
  static httplib::MultipartFormDataItems plane_request(httplib::MultipartFormData image,
                                                       const std::string& steps) {
    return {std::move(image),
            part("example_image", "ex.png"),
            part("example_label", "ex_labels.png"),
            {"steps", steps, "", ""},
            {"label", "1", "", ""}};
  }

  httplib::Client client(const std::string& token = kToken) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120);
    c.set_write_timeout(60);
    if (!token.empty()) c.set_bearer_token_auth(token);
    return c;
  }

  httplib::Result segment(const httplib::MultipartFormDataItems& items,
                          const std::string& query = "") const {
    return client().Post(("/v1/segment" + query).c_str(), items);
  }

  void expect_still_serving() const {
    auto res = client("").Get("/v1/health");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }

  static inline fs::path dir_;
  static inline testing::ServerProcess* server_ = nullptr;
  static inline int port_ = -1;
  static inline io::Volume query_3d_, query_2d_;
};

TEST_F(ServeHttp, HealthNeedsNoTokenAndReportsTheQueue) {
  auto res = client("").Get("/v1/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  auto j = Json::parse(res->body);
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["queue"]["capacity"], 3);  // 1 worker + queue 2
}

TEST_F(ServeHttp, ModelDescribesTheCheckpoint) {
  auto res = client().Get("/v1/model");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto j = Json::parse(res->body);
  EXPECT_EQ(j["checkpoint"], "tiny.pt");
  EXPECT_GT(j["parameters"].get<int64_t>(), 1000);
  EXPECT_GE(j["max_context"].get<int>(), 1);
  EXPECT_TRUE(j["labels_seen_in_training"].is_array());
  EXPECT_TRUE(j["config"].is_object());
}

TEST_F(ServeHttp, MissingOrWrongTokenIs401) {
  expect_error(client("").Get("/v1/model"), 401, "Authorization");
  expect_error(client("wrong-token").Get("/v1/model"), 401, "Authorization");
  auto res = client("test-token-4f1")
                 .Post("/v1/segment", httplib::MultipartFormDataItems{part("image", "query.png")});
  expect_error(res, 401, "Authorization");
  expect_still_serving();
}

TEST_F(ServeHttp, VolumeMaskComesBackOnTheInputsGridWithUncertaintyAndTiming) {
  auto res = segment({part("image", "query.nii.gz"),
                      part("example_image", "ex.nii.gz"),
                      part("example_label", "ex_labels.nii.gz"),
                      {"text", "segment the liver", "", ""},
                      {"options", R"({"steps": 2, "samples": 2, "threshold": 0.5})", "", ""}},
                     "?include=uncertainty,probability");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto j = Json::parse(res->body);
  EXPECT_EQ(j["mask"]["format"], "nifti");
  EXPECT_EQ(j["mask"]["filename"], "query_mask.nii.gz");
  write_file_atomic(path("back_mask.nii.gz"), decode_base64(j["mask"]["base64"]));
  const auto mask = io::read_labels(path("back_mask.nii.gz"));
  EXPECT_EQ(mask.size, query_3d_.size);
  EXPECT_TRUE(mask.geometry.same_as(query_3d_.geometry));
  EXPECT_EQ(j["grid"]["size"], Json(query_3d_.size));
  EXPECT_EQ(j["num_context"], 3);  // slices_per_example of one 3D example
  EXPECT_GE(j["foreground_voxels"].get<int64_t>(), 0);
  for (const char* map : {"probability", "uncertainty"}) {
    const Json& file = std::string(map) == "uncertainty" ? j["uncertainty"]["file"] : j[map];
    write_file_atomic(path(std::string("back_") + map + ".nii.gz"), decode_base64(file["base64"]));
    const auto back = io::read_image(path(std::string("back_") + map + ".nii.gz"));
    EXPECT_EQ(back.size, query_3d_.size) << map;
    EXPECT_TRUE(back.geometry.same_as(query_3d_.geometry)) << map;
  }
  EXPECT_GE(j["uncertainty"]["max"].get<double>(), 0.0);
  EXPECT_GT(j["timing"]["segment_seconds"].get<double>(), 0.0);
  EXPECT_GE(j["timing"]["total_seconds"].get<double>(),
            j["timing"]["segment_seconds"].get<double>());
}

TEST_F(ServeHttp, PlaneMaskComesBackAsRawPngWithTimingHeaders) {
  auto res = segment(plane_request(part("image", "query.png"), "2"), "?response=mask");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "image/png");
  EXPECT_FALSE(res->get_header_value("X-Segicl-Segment-Seconds").empty());
  EXPECT_FALSE(res->get_header_value("X-Segicl-Foreground-Voxels").empty());
  write_file_atomic(path("back_mask.png"), res->body);
  const auto mask = io::read_labels(path("back_mask.png"));
  EXPECT_EQ(mask.dims, 2);
  EXPECT_EQ(mask.size, query_2d_.size);
}

TEST_F(ServeHttp, PlaneCanAlsoComeBackAsNiftiWithTheImage) {
  auto res = segment({part("image", "query.png"),
                      {"text", "segment the fetal head", "", ""},
                      {"steps", "1", "", ""}},
                     "?format=nifti&include=image");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto j = Json::parse(res->body);
  EXPECT_EQ(j["mask"]["format"], "nifti");
  EXPECT_EQ(j["image"]["format"], "nifti");
  EXPECT_FALSE(j["uncertainty"].contains("file")) << "include replaces the default list";
}

TEST_F(ServeHttp, WrongFileTypeIs415) {
  auto j = expect_error(segment({{"image", "just some notes", "notes.txt", "text/plain"}}), 415,
                        "image");
  EXPECT_NE(j.value("error", "").find("notes.txt"), std::string::npos);
  expect_error(segment({{"image", "this is not a NIfTI file", "fake.nii.gz", "application/gzip"}}),
               422, "image");
  expect_still_serving();
}

TEST_F(ServeHttp, TiffUploadsAreSegmentedAndCraftedOnesAre422) {
  // Valid TIFFs of another writer (Pillow seeds of fuzz_image2d): 8-bit and 16-bit queries.
  const fs::path source(SEGICL_SOURCE_DIR);
  for (const char* name : {"us_grey.tif", "us_16bit.tif"}) {
    SCOPED_TRACE(name);
    const std::string tiff = read_file((source / "fuzz/corpus/fuzz_image2d" / name).string());
    auto res = segment(plane_request({"image", tiff, name, "image/tiff"}, "1"), "?response=mask");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
  }
  // Every TIFF that once crashed, hung or overran ITK/libtiff is a 422 naming the field, and the
  // server goes on serving.
  int crafted = 0;
  for (const auto& entry : fs::directory_iterator(source / "fuzz" / "regressions")) {
    if (entry.path().extension() != ".tif") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const std::string name = entry.path().filename().string();
    expect_error(segment({{"image", read_file(entry.path().string()), name, "image/tiff"}}), 422,
                 "image");
    ++crafted;
  }
  EXPECT_GE(crafted, 7);
  expect_still_serving();
}

TEST_F(ServeHttp, FourDimensionalVolumeIs422) {
  auto j = expect_error(
      segment({{"image", four_d_nifti(), "series.nii", "application/octet-stream"}}), 422, "image");
  EXPECT_NE(j.value("error", "").find("4D"), std::string::npos) << j.dump();
  EXPECT_EQ(j.value("error", "").find("segicl-serve-"), std::string::npos)
      << "leaks the scratch path: " << j.dump();
  expect_still_serving();
}

TEST_F(ServeHttp, ExampleImageAndLabelOfDifferentSizesAre422OnTheLabel) {
  auto j = expect_error(segment({part("image", "query.nii.gz"),
                                 part("example_image", "ex.nii.gz"),
                                 part("example_label", "ex_labels_small.nii.gz"),
                                 {"steps", "1", "", ""}}),
                        422, "example_label[0]");
  EXPECT_NE(j.value("error", "").find("ex_labels_small.nii.gz"), std::string::npos) << j.dump();
  expect_still_serving();
}

TEST_F(ServeHttp, EmptyExampleMaskIs422) {
  auto j = expect_error(segment({part("image", "query.nii.gz"),
                                 part("example_image", "ex.nii.gz"),
                                 part("example_label", "ex_labels_empty.nii.gz"),
                                 {"steps", "1", "", ""}}),
                        422, "example_label[0]");
  EXPECT_NE(j.value("error", "").find("empty"), std::string::npos) << j.dump();
  expect_still_serving();
}

TEST_F(ServeHttp, LabelValueAbsentFromTheExampleIs422) {
  auto j = expect_error(segment({part("image", "query.nii.gz"),
                                 part("example_image", "ex.nii.gz"),
                                 part("example_label", "ex_labels.nii.gz"),
                                 {"label", "7", "", ""},
                                 {"steps", "1", "", ""}}),
                        422, "example_label[0]");
  EXPECT_NE(j.value("error", "").find("label 7"), std::string::npos) << j.dump();
  expect_still_serving();
}

TEST_F(ServeHttp, UploadOverTheLimitIs413) {
  std::string big(static_cast<size_t>(kUploadLimitMb + 1) * 1024 * 1024, 'x');
  auto j = expect_error(segment({{"image", big, "big.nii", "application/octet-stream"}}), 413, "");
  EXPECT_NE(j.value("hint", "").find("--max-upload-mb"), std::string::npos) << j.dump();
  expect_still_serving();
}

TEST_F(ServeHttp, MalformedMultipartIs400) {
  auto c = client();
  expect_error(c.Post("/v1/segment", "--nope\r\ngarbage without headers",
                      "multipart/form-data; boundary=abc"),
               400, "");
  expect_error(c.Post("/v1/segment", "{\"image\": 1}", "application/json"), 400, "");
  expect_error(segment({part("image", "query.png"), {"steps", "0", "", ""}}), 400, "steps");
  expect_error(segment({part("image", "query.nii.gz"), {"format", "png", "", ""}}), 400, "format");
  expect_still_serving();
}

// Regression (issue 8 load test): httplib read and discarded an oversized body before answering,
// so a client announcing 1 GB and sending a trickle held a server thread until the read timeout.
TEST_F(ServeHttp, AnnouncedOversizedBodyIs413AtOnceWithoutReadingIt) {
  const auto start = std::chrono::steady_clock::now();
  const std::string reply = raw_exchange(
      port_,
      "POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: "
          "1073741824\r\n\r\n" +
          std::string(4096, 'x'),
      std::chrono::seconds(20));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
  EXPECT_NE(reply.find("\"error\":\"request body is larger"), std::string::npos) << reply;
  EXPECT_LT(seconds, 5.0) << "the server waited for the announced body";
  expect_still_serving();
}

// Regression (issue 8 load test): a refusal made before the body is read (here 401) kept the
// connection open, so the unread body was parsed as a next request; now one request per connection.
TEST_F(ServeHttp, BodyOfARefusedRequestIsNeverParsedAsANextRequest) {
  const std::string smuggled = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string reply =
      raw_exchange(port_,
                   "POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                   "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: " +
                       std::to_string(smuggled.size()) + "\r\n\r\n" + smuggled,
                   std::chrono::seconds(20));
  EXPECT_EQ(reply.rfind("HTTP/1.1 401", 0), 0u) << reply;
  EXPECT_EQ(count_of(reply, "HTTP/1.1 "), 1) << reply;
  EXPECT_NE(reply.find("Connection: close"), std::string::npos) << reply;
  expect_still_serving();
}

TEST_F(ServeHttp, SamplesAreListedAndServedButNothingElse) {
  auto res = client().Get("/v1/samples");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto j = Json::parse(res->body);
  ASSERT_FALSE(j["samples"].empty()) << "data/samples is part of the repository";
  const std::string url = j["samples"][0]["image_url"];
  auto file = client().Get(url.c_str());
  ASSERT_TRUE(file);
  EXPECT_EQ(file->status, 200);
  EXPECT_GT(file->body.size(), 100u);
  expect_error(client().Get("/v1/samples/chaos_mr_t2/images/missing.nii.gz"), 404, "");
  expect_error(client().Get("/v1/samples/..%2F..%2Fetc/images/passwd"), 404, "");
  expect_error(client().Get("/v1/nothing-here"), 404, "");
}

// A second server with one worker and no waiting room: while a slow request runs, the next one
// is turned away at once with 503 + Retry-After, and health still answers.
TEST(ServeQueue, FullQueueIs503WithRetryAfterWhileHealthAnswers) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  const auto dir = temp_dir() / "queue";
  fs::create_directories(dir);
  auto [volume, labels] = blob_volume({64, 64, 40}, io::Geometry{});
  io::write_image(volume, (dir / "slow.nii.gz").string());
  testing::ServerProcess server;
  ASSERT_EQ(server.start({"--model", tiny_checkpoint(), "--workers", "1", "--queue", "0"},
                         (dir / "server.log").string()),
            "");
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(300);
  const httplib::MultipartFormDataItems slow{
      {"image", read_file((dir / "slow.nii.gz").string()), "slow.nii.gz", ""},
      {"options", R"({"steps": 8, "samples": 16})", "", ""}};
  int slow_status = 0;
  std::thread first([&] {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(300);
    auto res = c.Post("/v1/segment?response=mask", slow);
    slow_status = res ? res->status : -1;
  });
  // Wait until the slow request holds the worker.
  bool running = false;
  for (int i = 0; i < 2000 && !running; ++i) {
    auto health = client.Get("/v1/health");
    running = health && Json::parse(health->body)["queue"]["running"] == 1;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(running) << "the slow request never started\n" << server.log();
  auto busy = client.Post("/v1/segment", slow);
  auto j = expect_error(busy, 503, "");
  if (busy) EXPECT_EQ(busy->get_header_value("Retry-After"), "5");
  auto health = client.Get("/v1/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  first.join();
  EXPECT_EQ(slow_status, 200) << server.log();
}

}  // namespace
}  // namespace segicl::serve
