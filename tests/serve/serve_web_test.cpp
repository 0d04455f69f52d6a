// Headless Chromium end-to-end test of the web page (label: integration): starts `segicl serve`
// with a random-weight tiny checkpoint and a token, then runs web_e2e.cjs (node + playwright-core
// driving Debian's chromium). Missing node, chromium or playwright-core is a failure, not a skip:
// scripts/install-deps.sh installs them and the segicl_web target vendors playwright-core.
#include <gtest/gtest.h>

#include <filesystem>

#include "../infer/test_support.h"
#include "segicl/core/atomic_file.h"
#include "segicl/io/volume.h"
#include "server_process.h"

namespace segicl::serve {
namespace {

namespace fs = std::filesystem;

TEST(WebPage, SegmentsABundledSampleInHeadlessChromium) {
  if (!io::available()) GTEST_SKIP() << "built without ITK";
  const std::string node = SEGICL_NODE, chromium = SEGICL_CHROMIUM;
  const fs::path modules = fs::path(SEGICL_SOURCE_DIR) / "web" / "node_modules";
  ASSERT_FALSE(node.empty())
      << "node not found at configure time: run scripts/install-deps.sh, then re-run cmake";
  ASSERT_FALSE(chromium.empty())
      << "chromium not found at configure time: run scripts/install-deps.sh, then re-run cmake";
  ASSERT_TRUE(fs::exists(modules / "playwright-core"))
      << "playwright-core missing in " << modules
      << ": build target segicl_web (runs scripts/vendor-web.sh)";
  ASSERT_TRUE(
      fs::exists(fs::path(SEGICL_BUILD_DIR) / "bin" / "web" / "vendor" / "niivue" / "index.js"))
      << "the build has no vendored NiiVue: build target segicl_web";

  const auto dir = infer::testing::temp_dir() / "web";
  fs::create_directories(dir);
  testing::ServerProcess server;
  const std::string token = "web-test-token";
  ASSERT_EQ(server.start({"--model", infer::testing::tiny_checkpoint(), "--token", token,
                          "--max-steps", "4"},
                         (dir / "server.log").string()),
            "");
  const std::string screenshot = std::string(SEGICL_BUILD_DIR) + "/test-artifacts/serve_web.png";
  const std::string output = (dir / "node.txt").string();
  const std::string command = node + " " + SEGICL_SOURCE_DIR + "/tests/serve/web_e2e.cjs " +
                              modules.string() + " " + chromium + " " + server.url() + " " + token +
                              " " + screenshot + " > " + output + " 2>&1";
  const int status = std::system(command.c_str());
  const std::string log = read_file(output);
  std::printf("%s", log.c_str());
  EXPECT_EQ(status, 0) << log << "\n--- server log ---\n" << server.log();
  EXPECT_TRUE(fs::exists(screenshot)) << "no screenshot at " << screenshot;
  const int stopped = server.stop();
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << server.log();
}

}  // namespace
}  // namespace segicl::serve
