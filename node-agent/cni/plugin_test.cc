// The plugin's commands against a fake agent on a real control socket, with the "host" a fresh
// network namespace of this thread and the pod a named namespace (`ip netns add`). The end-to-end
// test with real agents is e2e/netns/cni_plugin.sh; this one covers the answers a real agent gives
// only in failure cases (an error, a failed attachment to undo).
#include "node-agent/cni/plugin.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node-agent/cni/attach_protocol.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/tun/testing/network_namespace.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// Runs `command` (in this thread's network namespace) and returns its stdout.
std::string Shell(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  pclose(pipe);
  return output;
}

void WriteFile(const std::string& path, const std::string& value) {
  std::ofstream file(path);
  file << value;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::string value;
  std::getline(file, value);
  return value;
}

// Answers "cni" requests with whatever the test set, and records them.
class FakeAgent {
 public:
  explicit FakeAgent(const std::string& path) {
    absl::StatusOr<std::unique_ptr<ControlServer>> server =
        ControlServer::Listen(path, [this](std::string_view line) { return Handle(line); });
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = std::move(*server);
  }
  void Answer(const std::string& command, const std::string& response) {
    absl::MutexLock lock(&mu_);
    answers_[command] = response;
  }
  std::vector<AttachRequest> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  std::vector<std::string> commands() {
    std::vector<std::string> result;
    for (const AttachRequest& r : requests()) result.push_back(r.command);
    return result;
  }

 private:
  std::string Handle(std::string_view line) {
    if (line.substr(0, kRequestPrefix.size()) != kRequestPrefix) return R"({"error": "unknown"})";
    absl::StatusOr<AttachRequest> request = DecodeRequest(line.substr(kRequestPrefix.size()));
    if (!request.ok()) return R"({"error": {"code": 6, "msg": "bad request"}})";
    absl::MutexLock lock(&mu_);
    requests_.push_back(*request);
    auto it = answers_.find(request->command);
    return it == answers_.end() ? R"({"attached": false})" : it->second;
  }

  absl::Mutex mu_;
  std::map<std::string, std::string> answers_ ABSL_GUARDED_BY(mu_);
  std::vector<AttachRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ControlServer> server_;
};

const char kAttached[] = R"({"attached": true, "name": "web.default.pod",
    "addresses": ["10.99.0.9", "fd99::9"], "routes": ["10.99.0.0/16", "fd99::/48"], "mtu": 1380})";

class PluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status entered = EnterNewNetworkNamespace();
    if (entered.code() == absl::StatusCode::kPermissionDenied) GTEST_SKIP() << entered;
    ASSERT_TRUE(entered.ok()) << entered;
    if (system("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    WriteFile("/proc/sys/net/ipv4/ip_forward", "1");
    WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    pod_ = absl::StrCat("tmcni-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(system(absl::StrCat("ip netns add ", pod_).c_str()), 0);
    ASSERT_EQ(system(absl::StrCat("ip -n ", pod_, " link set lo up").c_str()), 0);
    char dir_template[] = "/tmp/tmcni-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    agent_ = std::make_unique<FakeAgent>(dir_ + "/tm0.sock");
  }
  void TearDown() override {
    agent_.reset();
    extra_pods_.push_back(pod_);
    for (const std::string& pod : extra_pods_) {
      if (!pod.empty()) (void)system(absl::StrCat("ip netns del ", pod, " 2>/dev/null").c_str());
    }
    if (!dir_.empty()) (void)system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  std::string Config(const std::string& version = "1.0.0", const std::string& extra = "") {
    return absl::StrCat(R"({"cniVersion": ")", version,
                        R"(", "name": "pods", "type": "tunnelmesh-cni", "mesh": "demo", )",
                        R"("agentSocket": ")", dir_, R"(/tm0.sock")", extra, "}");
  }
  PluginOutput Run(const std::string& command, const std::string& config,
                   const std::string& container = "c0ffee0123456789") {
    std::map<std::string, std::string> vars = {
        {"CNI_COMMAND", command},
        {"CNI_CONTAINERID", container},
        {"CNI_NETNS", "/run/netns/" + pod_},
        {"CNI_IFNAME", "eth0"},
        {"CNI_PATH", "/usr/lib/cni"},
        {"CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u-1"}};
    return RunPlugin(
        [&vars](const char* name) -> const char* {
          auto it = vars.find(name);
          return it == vars.end() ? nullptr : it->second.c_str();
        },
        config);
  }
  std::string InPod(const std::string& command) {
    return Shell(absl::StrCat("ip netns exec ", pod_, " ", command, " 2>&1"));
  }

  std::string pod_;
  std::vector<std::string> extra_pods_;
  std::string dir_;
  std::unique_ptr<FakeAgent> agent_;
};

TEST_F(PluginTest, AddMakesInterfacesAndRoutesAndDelRemovesThem) {
  agent_->Answer("ADD", kAttached);
  // Something in the host to reach: the host's own mesh addresses.
  ASSERT_EQ(system("ip addr add 10.99.0.1/32 dev lo && ip addr add fd99::1/128 dev lo"), 0);
  PluginOutput out = Run("ADD", Config("1.0.0", R"(, "prevResult": {"cniVersion": "1.0.0",
      "interfaces": [{"name": "eth0", "sandbox": "/x"}],
      "ips": [{"address": "10.22.0.5/16", "interface": 0}]})"));
  ASSERT_EQ(out.exit_code, 0) << out.stdout_text;
  json result = json::parse(out.stdout_text);
  EXPECT_EQ(result["interfaces"][1]["name"], "mesh0");
  EXPECT_EQ(result["interfaces"][1]["sandbox"], "/run/netns/" + pod_);
  EXPECT_EQ(result["ips"][1], json::parse(R"({"address": "10.99.0.9/32", "interface": 1})"));
  EXPECT_EQ(result["ips"][2], json::parse(R"({"address": "fd99::9/128", "interface": 1})"));
  EXPECT_EQ(result["interfaces"][1]["mac"].get<std::string>().size(), 17u);

  ASSERT_EQ(agent_->requests().size(), 1u);
  AttachRequest request = agent_->requests()[0];
  EXPECT_EQ(request.command, "ADD");
  EXPECT_EQ(request.mesh, "demo");
  EXPECT_EQ(request.container_id, "c0ffee0123456789");
  EXPECT_EQ(request.netns, "/run/netns/" + pod_);
  EXPECT_EQ(request.if_name, "eth0");  // the runtime's attachment, not our interface
  EXPECT_EQ(request.pod_name, "web");
  EXPECT_EQ(request.pod_namespace, "default");
  EXPECT_EQ(request.pod_uid, "u-1");

  const std::string host = HostInterfaceName("c0ffee0123456789");
  std::string pod_link = InPod("ip -o link show mesh0");
  EXPECT_THAT(pod_link, HasSubstr("mtu 1380"));
  EXPECT_THAT(pod_link, HasSubstr("UP"));
  EXPECT_THAT(InPod("ip -o addr show dev mesh0"), HasSubstr("10.99.0.9/32"));
  EXPECT_THAT(InPod("ip -o addr show dev mesh0"), HasSubstr("fd99::9/128"));
  EXPECT_THAT(InPod("ip route show 10.99.0.0/16"), HasSubstr("dev mesh0"));
  EXPECT_THAT(InPod("ip -6 route show fd99::/48"), HasSubstr("via fe80::1 dev mesh0"));
  EXPECT_EQ(InPod("ip route show default"), "");  // never a default route
  EXPECT_THAT(Shell("ip route show 10.99.0.9"), HasSubstr("dev " + host));
  EXPECT_THAT(Shell("ip -6 route show fd99::9"), HasSubstr("dev " + host));
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv4/conf/" + host + "/proxy_arp"), "1");
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv4/neigh/" + host + "/proxy_delay"), "0");
  // Both families reach the host through the pair (proxy ARP; fe80::1).
  EXPECT_THAT(InPod("ping -c1 -W5 10.99.0.1"), HasSubstr("1 received"));
  EXPECT_THAT(InPod("ping -6 -c1 -W5 fd99::1"), HasSubstr("1 received"));

  // A repeated ADD makes the same state again.
  PluginOutput again = Run("ADD", Config());
  ASSERT_EQ(again.exit_code, 0) << again.stdout_text;
  EXPECT_THAT(InPod("ip -o addr show dev mesh0"), HasSubstr("10.99.0.9/32"));
  EXPECT_THAT(InPod("ping -c1 -W5 10.99.0.1"), HasSubstr("1 received"));

  agent_->Answer("CHECK", kAttached);
  PluginOutput check = Run("CHECK", Config());
  EXPECT_EQ(check.exit_code, 0) << check.stdout_text;
  ASSERT_EQ(system(absl::StrCat("ip -n ", pod_, " addr del 10.99.0.9/32 dev mesh0").c_str()), 0);
  check = Run("CHECK", Config());
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_THAT(check.stdout_text, HasSubstr("lacks its mesh address 10.99.0.9"));

  PluginOutput del = Run("DEL", Config());
  EXPECT_EQ(del.exit_code, 0) << del.stdout_text;
  EXPECT_EQ(del.stdout_text, "");
  EXPECT_EQ(Shell("ip -o link show " + host + " 2>/dev/null"), "");
  EXPECT_EQ(InPod("ip -o link show mesh0 2>/dev/null | grep mesh0"), "");
  EXPECT_EQ(Shell("ip route show 10.99.0.9"), "");
  EXPECT_EQ(Shell("ip -6 route show fd99::9"), "");
  EXPECT_EQ(agent_->commands().back(), "DEL");
  // Again, with nothing left: still success.
  EXPECT_EQ(Run("DEL", Config()).exit_code, 0);
}

TEST_F(PluginTest, NotAttachedPassesPrevResultThrough) {
  agent_->Answer("ADD", R"({"attached": false, "reason": "no tunnelmesh.io/mesh annotation"})");
  PluginOutput out = Run("ADD", Config("0.4.0", R"(, "prevResult": {"cniVersion": "0.4.0",
      "ips": [{"version": "4", "address": "10.22.0.5/16"}], "dns": {}})"));
  ASSERT_EQ(out.exit_code, 0) << out.stdout_text;
  EXPECT_EQ(json::parse(out.stdout_text), json::parse(R"({"cniVersion": "0.4.0",
      "ips": [{"version": "4", "address": "10.22.0.5/16"}], "dns": {}})"));
  EXPECT_THAT(out.stderr_text, HasSubstr("no tunnelmesh.io/mesh annotation"));
  EXPECT_EQ(InPod("ip -o link show mesh0 2>/dev/null | grep mesh0"), "");
}

TEST_F(PluginTest, AgentErrorsComeBackAsCniErrors) {
  agent_->Answer("ADD", R"({"error": {"code": 102, "msg": "mesh demo has no free IPv4 address",
                                      "details": "10.99.0.0/16"}})");
  PluginOutput out = Run("ADD", Config());
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(json::parse(out.stdout_text), json::parse(R"({"cniVersion": "1.0.0", "code": 102,
                            "msg": "mesh demo has no free IPv4 address",
                            "details": "10.99.0.0/16"})"));
}

TEST_F(PluginTest, AnAgentWithoutPodsSaysToUpgrade) {
  agent_->Answer("ADD", R"({"error": "unknown request"})");
  PluginOutput out = Run("ADD", Config());
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(json::parse(out.stdout_text)["code"], kCniErrorNotAvailable);
  EXPECT_THAT(out.stdout_text, HasSubstr("does not attach pods: upgrade tunnelmesh-agent"));
}

TEST_F(PluginTest, FailedInterfacesDetachThePodAgain) {
  agent_->Answer("ADD", kAttached);
  ASSERT_EQ(
      system(absl::StrCat("ip -n ", pod_, " link add mesh0 type veth peer name other0").c_str()),
      0);
  PluginOutput out = Run("ADD", Config());
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_THAT(out.stdout_text, HasSubstr("already has an interface named mesh0"));
  EXPECT_THAT(out.stdout_text, HasSubstr("podInterface"));
  EXPECT_EQ(agent_->commands(), (std::vector<std::string>{"ADD", "DEL"}));
  EXPECT_EQ(Shell("ip -o link show " + HostInterfaceName("c0ffee0123456789") + " 2>/dev/null"), "");
}

TEST_F(PluginTest, ForwardingOffIsAnErrorNamingTheSysctl) {
  agent_->Answer("ADD", kAttached);
  WriteFile("/proc/sys/net/ipv4/ip_forward", "0");
  PluginOutput out = Run("ADD", Config());
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_THAT(out.stdout_text, HasSubstr("net.ipv4.ip_forward=1"));
  EXPECT_EQ(agent_->commands(), (std::vector<std::string>{"ADD", "DEL"}));
}

TEST_F(PluginTest, GcRemovesHostEndsOfForgottenContainersAndTellsTheAgent) {
  agent_->Answer("ADD", kAttached);
  ASSERT_EQ(Run("ADD", Config(), "keep0001").exit_code, 0);
  // A second pod, whose runtime lost track of it (GC does not list it).
  extra_pods_.push_back(pod_);
  pod_ += "b";
  ASSERT_EQ(system(absl::StrCat("ip netns add ", pod_).c_str()), 0);
  ASSERT_EQ(Run("ADD", Config(), "gone0002").exit_code, 0);
  agent_->Answer("GC", R"({"attached": false})");
  PluginOutput out = Run("GC", Config("1.1.0", R"(, "cni.dev/valid-attachments": [
          {"containerID": "keep0001", "ifname": "eth0"}])"));
  EXPECT_EQ(out.exit_code, 0) << out.stdout_text;
  EXPECT_NE(Shell("ip -o link show " + HostInterfaceName("keep0001") + " 2>/dev/null"), "");
  EXPECT_EQ(Shell("ip -o link show " + HostInterfaceName("gone0002") + " 2>/dev/null"), "");
  AttachRequest gc = agent_->requests().back();
  EXPECT_EQ(gc.command, "GC");
  EXPECT_EQ(gc.valid_attachments, (std::vector<Attachment>{{"keep0001", "eth0"}}));
}

TEST_F(PluginTest, StatusAsksTheAgent) {
  agent_->Answer("STATUS", R"({"attached": false})");
  EXPECT_EQ(Run("STATUS", Config("1.1.0")).exit_code, 0);
  agent_->Answer("STATUS",
                 R"({"error": {"code": 50, "msg": "not registered with the coordinator"}})");
  PluginOutput out = Run("STATUS", Config("1.1.0"));
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(json::parse(out.stdout_text)["code"], 50);
  EXPECT_THAT(out.stdout_text, HasSubstr("not registered"));
  agent_.reset();
  out = Run("STATUS", Config("1.1.0"));
  EXPECT_EQ(json::parse(out.stdout_text)["code"], 50);
  EXPECT_THAT(out.stdout_text, HasSubstr("is tunnelmesh-agent running on this node?"));
}

TEST_F(PluginTest, CheckFailsForAnInterfaceTheAgentDoesNotKnow) {
  agent_->Answer("ADD", kAttached);
  ASSERT_EQ(Run("ADD", Config()).exit_code, 0);
  agent_->Answer("CHECK", R"({"attached": false, "reason": "no attachment"})");
  PluginOutput out = Run("CHECK", Config());
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_THAT(out.stdout_text, HasSubstr("does not know this pod's attachment"));
  // Nothing attached and nothing made: nothing to complain about.
  EXPECT_EQ(Run("CHECK", Config(), "other0001").exit_code, 0);
}

TEST_F(PluginTest, VersionNeedsNoConfiguration) {
  std::map<std::string, std::string> vars = {{"CNI_COMMAND", "VERSION"}};
  PluginOutput out = RunPlugin(
      [&vars](const char* name) -> const char* {
        auto it = vars.find(name);
        return it == vars.end() ? nullptr : it->second.c_str();
      },
      "");
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(json::parse(out.stdout_text)["supportedVersions"].size(), 3u);
}

}  // namespace
}  // namespace tunnelmesh::cni
