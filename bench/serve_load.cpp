// segicl_serve_load: a bounded load test of a running `segicl serve` on loopback (issue 8). Good
// clients mix /v1/health, /v1/model and /v1/segment on the bundled samples while one abuser sends
// bad requests (wrong token, truncated multipart, 4D volume, 1 GB Content-Length, slow bodies,
// garbage). Prints a summary and exits non-zero when a pass condition fails. Not a benchmark of
// the model: latencies include the queue. bench/serve_load.sh starts the server and calls this.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct Options {
  int port = 0;
  std::string token;
  int clients = 8;
  double seconds = 60;
  std::string samples = "data/samples";
  int server_pid = 0;
  int slow_clients = 2;        // concurrent slow-body connections the abuser keeps open
  double volume_share = 0.05;  // share of segment requests that send a 3D CHAOS volume
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

long rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Thread-safe tallies: latency per endpoint, counts per outcome, the first few failures.
class Tally {
 public:
  void latency(const std::string& endpoint, double ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    latencies_[endpoint].push_back(ms);
  }
  void count(const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counts_[what];
  }
  void failure(const std::string& what, const std::string& detail) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counts_["failed:" + what];
    if (failures_.size() < 20) failures_.push_back(what + ": " + detail.substr(0, 300));
  }
  Json summary() {
    std::lock_guard<std::mutex> lock(mutex_);
    Json j{{"counts", counts_}, {"failures", failures_}, {"latency_ms", Json::object()}};
    for (auto& [endpoint, values] : latencies_) {
      std::sort(values.begin(), values.end());
      auto pct = [&](double p) {
        return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
      };
      j["latency_ms"][endpoint] = {
          {"n", values.size()}, {"p50", pct(0.50)}, {"p99", pct(0.99)}, {"max", values.back()}};
    }
    return j;
  }
  int failures() {
    std::lock_guard<std::mutex> lock(mutex_);
    int n = 0;
    for (const auto& [what, c] : counts_)
      if (what.rfind("failed:", 0) == 0) n += c;
    return n;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::vector<double>> latencies_;
  std::map<std::string, int> counts_;
  std::vector<std::string> failures_;
};

// A NIfTI-1 header with dim[0] = 4 and its uint8 voxels: the server must refuse it with a 4xx.
std::string four_d_nifti() {
  std::string file(352 + 4 * 4 * 4 * 3, '\0');
  auto put = [&](size_t offset, const auto& value) {
    std::memcpy(&file[offset], &value, sizeof(value));
  };
  put(0, int32_t{348});
  const int16_t dim[8] = {4, 4, 4, 4, 3, 1, 1, 1};
  std::memcpy(&file[40], dim, sizeof(dim));
  put(70, int16_t{2});  // DT_UINT8
  put(72, int16_t{8});
  const float pixdim[8] = {1, 1, 1, 1, 1, 0, 0, 0};
  std::memcpy(&file[76], pixdim, sizeof(pixdim));
  put(108, 352.0f);
  std::memcpy(&file[344], "n+1", 4);
  return file;
}

// One raw exchange over a fresh socket: send `parts` with `gap` between them, then read the reply
// until the server closes or `timeout` passes. Returns "" when nothing came back. With
// `hang_up` the client closes right after sending, as a client that dies mid-upload would.
std::string raw_exchange(int port, const std::vector<std::string>& parts,
                         std::chrono::milliseconds gap, std::chrono::seconds timeout,
                         const std::atomic<bool>* stop = nullptr, bool hang_up = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    for (size_t i = 0; i < parts.size(); ++i) {
      if (stop && *stop) break;
      if (::send(fd, parts[i].data(), parts[i].size(), MSG_NOSIGNAL) < 0) break;
      if (i + 1 < parts.size()) std::this_thread::sleep_for(gap);
    }
    char buffer[4096];
    // A run that is stopping hangs up instead of waiting for the reply to an unfinished body.
    if (!hang_up && !(stop && *stop))
      for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) reply.append(buffer, n);
  }
  ::close(fd);
  return reply;
}

int status_of(const std::string& reply) {
  int status = 0;
  std::sscanf(reply.c_str(), "HTTP/1.%*d %d", &status);
  return status;
}

// A bad request passes when it got a 4xx whose body is our JSON error.
bool is_json_4xx(int status, const std::string& body) {
  if (status < 400 || status >= 500) return false;
  try {
    return Json::parse(body).contains("error");
  } catch (const Json::exception&) {
    return false;
  }
}

std::string body_of(const std::string& reply) {
  const size_t at = reply.find("\r\n\r\n");
  return at == std::string::npos ? "" : reply.substr(at + 4);
}

struct Sample {
  std::string name, image, labels, file;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--port")
      o.port = std::stoi(value);
    else if (flag == "--token")
      o.token = value;
    else if (flag == "--clients")
      o.clients = std::stoi(value);
    else if (flag == "--seconds")
      o.seconds = std::stod(value);
    else if (flag == "--samples")
      o.samples = value;
    else if (flag == "--pid")
      o.server_pid = std::stoi(value);
    else if (flag == "--slow-clients")
      o.slow_clients = std::stoi(value);
    else if (flag == "--volume-share")
      o.volume_share = std::stod(value);
    else {
      std::fprintf(stderr,
                   "usage: segicl_serve_load --port P [--token T] [--clients 8] [--seconds 60]\n"
                   "       [--samples data/samples] [--pid SERVER_PID] [--slow-clients 2]\n"
                   "       [--volume-share 0.05]\n");
      return 2;
    }
  }
  if (o.port <= 0) {
    std::fprintf(stderr, "--port is required\n");
    return 2;
  }
  std::vector<Sample> planes, volumes;
  for (const char* id : {"1014", "1037", "1044"}) {
    const std::string base = o.samples + "/hc18_us/";
    const std::string file = std::string("hc18_us_") + id + ".png";
    planes.push_back(
        {file, read_bytes(base + "images/" + file), read_bytes(base + "labels/" + file), file});
  }
  for (const char* id : {"p01", "p02"}) {
    const std::string base = o.samples + "/chaos_mr_t2/";
    const std::string file = std::string("chaos_mr_t2_") + id + ".nii.gz";
    volumes.push_back(
        {file, read_bytes(base + "images/" + file), read_bytes(base + "labels/" + file), file});
  }
  const httplib::Headers auth = o.token.empty()
                                    ? httplib::Headers{}
                                    : httplib::Headers{{"Authorization", "Bearer " + o.token}};
  Tally tally;

  // ---- auth: with a token, every endpoint but /v1/health refuses a request without it ---------
  if (!o.token.empty()) {
    httplib::Client c("127.0.0.1", o.port);
    const std::vector<std::pair<std::string, std::string>> routes{
        {"GET", "/v1/model"},
        {"GET", "/v1/samples"},
        {"GET", "/v1/samples/hc18_us/images/hc18_us_1014.png"},
        {"POST", "/v1/segment"},
        {"GET", "/v1/nonexistent"}};
    for (const auto& [method, path] : routes) {
      auto res = method == "GET" ? c.Get(path.c_str())
                                 : c.Post(path.c_str(), "x", "application/octet-stream");
      if (!res || res->status != 401 || !is_json_4xx(res->status, res->body))
        tally.failure("auth", method + " " + path + " without token: " +
                                  (res ? std::to_string(res->status) : "no reply"));
      else
        tally.count("auth_refused_without_token");
    }
    auto health = c.Get("/v1/health");
    if (!health || health->status != 200) tally.failure("auth", "/v1/health without token refused");
  }

  const long rss_before = o.server_pid ? rss_kib(o.server_pid) : -1;
  std::atomic<bool> stop{false};
  long rss_peak = rss_before;
  // RSS every tenth of the run: warm-up growth (allocator arenas, torch caches) levels off, a
  // leak keeps climbing.
  std::vector<long> rss_timeline;
  std::thread sampler([&] {
    const auto begin = Clock::now();
    while (!stop) {
      if (o.server_pid) {
        const long rss = rss_kib(o.server_pid);
        rss_peak = std::max(rss_peak, rss);
        const double t = std::chrono::duration<double>(Clock::now() - begin).count();
        if (t >= o.seconds / 10 * (rss_timeline.size() + 1)) rss_timeline.push_back(rss);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  // ---- good clients ------------------------------------------------------------------------
  auto good_client = [&](int index) {
    std::mt19937 rng(1234 + index);
    std::uniform_real_distribution<double> u(0, 1);
    httplib::Client c("127.0.0.1", o.port);
    c.set_read_timeout(120);
    c.set_connection_timeout(10);
    while (!stop) {
      const double pick = u(rng);
      std::string endpoint;
      httplib::Result res{nullptr, httplib::Error::Unknown};
      const auto start = Clock::now();
      if (pick < 0.35) {
        endpoint = "health";
        res = c.Get("/v1/health");
      } else if (pick < 0.55) {
        endpoint = "model";
        res = c.Get("/v1/model", auth);
      } else {
        const bool volume = u(rng) < o.volume_share;
        const auto& pool = volume ? volumes : planes;
        const size_t q = rng() % pool.size(), e = (q + 1) % pool.size();
        endpoint = volume ? "segment_3d" : "segment_2d";
        const httplib::MultipartFormDataItems form{
            {"image", pool[q].image, pool[q].file, "application/octet-stream"},
            {"example_image", pool[e].image, pool[e].file, "application/octet-stream"},
            {"example_label", pool[e].labels, pool[e].file, "application/octet-stream"},
            {"text", volume ? "segment the liver" : "segment the fetal head", "", ""},
            {"options", R"({"steps": 1})", "", ""}};
        res = c.Post("/v1/segment?response=mask", auth, form);
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (!res) {
        tally.failure(endpoint, "no reply: " + httplib::to_string(res.error()));
        continue;
      }
      if (res->status == 503 && endpoint.rfind("segment", 0) == 0) {
        if (res->get_header_value("Retry-After").empty())
          tally.failure(endpoint, "503 without Retry-After");
        else
          tally.count("backpressure_503");
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      if (res->status != 200) {
        tally.failure(endpoint, std::to_string(res->status) + " " + res->body);
        continue;
      }
      tally.count("ok:" + endpoint);
      tally.latency(endpoint, ms);
    }
  };

  // ---- the abuser: one bad request after another, plus a few slow-body connections ---------
  const std::string boundary = "segicl-load-boundary";
  auto multipart_head = [&](size_t length, const std::string& token) {
    return "POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
           (token.empty() ? std::string() : "Authorization: Bearer " + token + "\r\n") +
           "Content-Type: multipart/form-data; boundary=" + boundary +
           "\r\nContent-Length: " + std::to_string(length) + "\r\nConnection: close\r\n\r\n";
  };
  const std::string png_part = "--" + boundary +
                               "\r\nContent-Disposition: form-data; name=\"image\"; "
                               "filename=\"q.png\"\r\nContent-Type: image/png\r\n\r\n" +
                               planes[0].image + "\r\n--" + boundary + "--\r\n";
  auto bad_client = [&] {
    httplib::Client c("127.0.0.1", o.port);
    c.set_read_timeout(60);
    int kind = 0;
    while (!stop) {
      std::string what;
      int status = 0;
      std::string body;
      const auto start = Clock::now();
      switch (kind++ % 7) {
        case 0: {  // wrong token (or, without a token, an unknown endpoint)
          what = o.token.empty() ? "unknown_endpoint" : "wrong_token";
          auto res = c.Get(o.token.empty() ? "/v1/nope" : "/v1/model",
                           httplib::Headers{{"Authorization", "Bearer wrong"}});
          if (res) status = res->status, body = res->body;
          break;
        }
        case 1: {  // multipart cut in the middle of the file part (length matches what is sent)
          what = "truncated_multipart";
          const std::string cut = png_part.substr(0, png_part.size() / 2);
          const std::string reply =
              raw_exchange(o.port, {multipart_head(cut.size(), o.token) + cut},
                           std::chrono::milliseconds(0), std::chrono::seconds(30));
          status = status_of(reply), body = body_of(reply);
          break;
        }
        case 2: {  // announces more than it sends, then closes: no reply is possible, no crash
          what = "short_body_then_close";
          raw_exchange(o.port, {multipart_head(png_part.size(), o.token) + png_part.substr(0, 100)},
                       std::chrono::milliseconds(0), std::chrono::seconds(5), nullptr, true);
          tally.count("sent:" + what);
          continue;
        }
        case 3: {
          what = "four_d_volume";
          auto res = c.Post("/v1/segment", auth,
                            httplib::MultipartFormDataItems{{"image", four_d_nifti(), "series.nii",
                                                             "application/octet-stream"}});
          if (res) status = res->status, body = res->body;
          break;
        }
        case 4: {  // 1 GB announced, 1 KiB sent
          what = "one_gb_content_length";
          const std::string reply = raw_exchange(
              o.port, {multipart_head(size_t{1} << 30, o.token) + std::string(1024, 'x')},
              std::chrono::milliseconds(0), std::chrono::seconds(30));
          status = status_of(reply), body = body_of(reply);
          break;
        }
        case 5: {
          what = "garbage_request_line";
          const std::string reply =
              raw_exchange(o.port, {"\x16\x03\x01 not http at all\r\n\r\n"},
                           std::chrono::milliseconds(0), std::chrono::seconds(30));
          status = status_of(reply), body = body_of(reply);
          break;
        }
        case 6: {
          what = "json_instead_of_multipart";
          auto res = c.Post("/v1/segment", auth, "{\"image\": 1}", "application/json");
          if (res) status = res->status, body = res->body;
          break;
        }
      }
      tally.latency("bad:" + what,
                    std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      if (is_json_4xx(status, body))
        tally.count("bad_got_4xx_json:" + what);
      else if (status == 503 && what == "four_d_volume")
        // Uploads are decoded inside the admission queue (decoding is work the queue bounds), so
        // a bad volume meets the full queue's 503 first: backpressure, not a failure.
        tally.count("bad_backpressure_503:" + what);
      else
        tally.failure("bad:" + what, "status " + std::to_string(status) + " body " + body);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  // Slow loris: a valid request whose body arrives in 64-byte pieces every 500 ms; it must not
  // stop the good clients. It gets an answer only if it finishes before the run ends.
  auto slow_client = [&] {
    while (!stop) {
      std::vector<std::string> pieces{multipart_head(png_part.size(), o.token)};
      for (size_t at = 0; at < png_part.size(); at += 64) pieces.push_back(png_part.substr(at, 64));
      const std::string reply = raw_exchange(o.port, pieces, std::chrono::milliseconds(500),
                                             std::chrono::seconds(30), &stop);
      tally.count(reply.empty() ? "slow_body_no_reply"
                                : "slow_body_reply_" + std::to_string(status_of(reply)));
    }
  };

  std::vector<std::thread> threads;
  const auto started = Clock::now();
  for (int i = 0; i < o.clients; ++i) threads.emplace_back(good_client, i);
  threads.emplace_back(bad_client);
  for (int i = 0; i < o.slow_clients; ++i) threads.emplace_back(slow_client);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  stop = true;
  for (auto& t : threads) t.join();
  sampler.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  // RSS after the load, once the last replies are out: a leak shows as growth here.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long rss_after = o.server_pid ? rss_kib(o.server_pid) : -1;
  bool alive = true;
  {
    httplib::Client c("127.0.0.1", o.port);
    auto res = c.Get("/v1/health");
    alive = res && res->status == 200;
  }
  Json report = tally.summary();
  report["seconds"] = elapsed;
  report["clients"] = o.clients;
  report["slow_clients"] = o.slow_clients;
  report["server_alive_after"] = alive;
  report["rss_kib"] = {
      {"before", rss_before}, {"peak", rss_peak}, {"after", rss_after}, {"timeline", rss_timeline}};
  std::printf("%s\n", report.dump(1).c_str());
  const int failures = tally.failures();
  std::fprintf(stderr, "serve_load: %.0f s, %d failures, server %s\n", elapsed, failures,
               alive ? "alive" : "DOWN");
  return failures == 0 && alive ? 0 : 1;
}
