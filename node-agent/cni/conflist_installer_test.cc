// The installer against real files in a temporary conf dir and bin dir: the entry goes last into
// the first configuration, a .conf becomes a chain, a repeated install changes nothing, a primary
// CNI that rewrites its file gets the entry back, and uninstall leaves the file as it was.
#include "node-agent/cni/conflist_installer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "lib/base/file.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;

constexpr char kBridge[] = R"({"cniVersion": "0.4.0", "name": "k8s", "plugins": [
  {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]})";

class InstallerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cni-installer-XXXXXX";
    root_ = mkdtemp(tmpl);
    options_.conf_dir = root_ + "/net.d";
    options_.bin_dir = root_ + "/bin";
    mkdir(options_.conf_dir.c_str(), 0755);
    mkdir(options_.bin_dir.c_str(), 0755);
    options_.binary = root_ + "/plugin";
    options_.mesh = "demo";
    options_.agent_socket = "/var/lib/tunnelmesh/tm0.sock";
    ASSERT_TRUE(WriteFileAtomically(options_.binary, "binary bytes", 0755).ok());
  }
  void TearDown() override { (void)std::system(("rm -rf " + root_).c_str()); }
  void Put(const std::string& name, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomically(options_.conf_dir + "/" + name, text, 0644).ok());
  }
  json Read(const std::string& name) {
    return json::parse(*ReadFile(options_.conf_dir + "/" + name));
  }

  std::string root_;
  InstallOptions options_;
};

TEST_F(InstallerTest, AppendsToTheFirstConfigurationAndTakesItBack) {
  Put("10-k8s.conflist", kBridge);
  Put("20-other.conflist", kBridge);
  ASSERT_TRUE(Install(options_).ok());
  json patched = Read("10-k8s.conflist");
  ASSERT_EQ(patched["plugins"].size(), 3u);
  EXPECT_EQ(patched["plugins"][2],
            json({{"type", "tunnelmesh-cni"},
                  {"mesh", "demo"},
                  {"agentSocket", "/var/lib/tunnelmesh/tm0.sock"}}));
  EXPECT_EQ(Read("20-other.conflist"), json::parse(kBridge)) << "only the first file";
  EXPECT_EQ(*ReadFile(options_.bin_dir + "/tunnelmesh-cni"), "binary bytes");
  // Again: nothing changes (still one entry).
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_EQ(Read("10-k8s.conflist"), patched);
  // The primary CNI rewrites its file: the next install puts the entry back.
  Put("10-k8s.conflist", kBridge);
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_EQ(Read("10-k8s.conflist"), patched);
  // Options changed (another mesh): the old entry is replaced, not doubled.
  options_.mesh = "lab";
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_EQ(Read("10-k8s.conflist")["plugins"].size(), 3u);
  EXPECT_EQ(Read("10-k8s.conflist")["plugins"][2]["mesh"], "lab");
  ASSERT_TRUE(Uninstall(options_).ok());
  EXPECT_EQ(Read("10-k8s.conflist"), json::parse(kBridge));
  EXPECT_NE(access((options_.bin_dir + "/tunnelmesh-cni").c_str(), F_OK), 0);
  EXPECT_TRUE(Uninstall(options_).ok()) << "idempotent";
}

TEST_F(InstallerTest, ASingleConfBecomesAChain) {
  Put("10-bridge.conf",
      R"({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "bridge": "cni0"})");
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_NE(access((options_.conf_dir + "/10-bridge.conf").c_str(), F_OK), 0);
  json chain = Read("10-bridge.conflist");
  EXPECT_EQ(chain["cniVersion"], "1.0.0");
  EXPECT_EQ(chain["name"], "net");
  ASSERT_EQ(chain["plugins"].size(), 2u);
  EXPECT_EQ(chain["plugins"][0], json({{"type", "bridge"}, {"bridge", "cni0"}}));
  EXPECT_EQ(chain["plugins"][1]["type"], "tunnelmesh-cni");
}

TEST_F(InstallerTest, ErrorsNameTheProblem) {
  absl::Status none = Install(options_);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.message()).find("primary CNI"), std::string::npos) << none;
  Put("10-bad.conflist", "{not json");
  absl::Status bad = Install(options_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.message()).find("10-bad.conflist"), std::string::npos) << bad;
  Put("10-bad.conflist", R"({"name": "x", "plugins": []})");
  bad = Install(options_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.message()).find("plugins"), std::string::npos) << bad;
}

}  // namespace
}  // namespace tunnelmesh::cni
