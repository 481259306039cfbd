#include <sys/stat.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/control/status.h"

namespace tunnelmesh {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/tm-control-XXXXXX";
  return mkdtemp(tmpl);
}

TEST(ControlSocketTest, ServesRequestsAndRefusesSecondServer) {
  std::string path = ControlSocketPath(TempDir(), "tm-test0");
  auto server =
      ControlServer::Listen(path, [](std::string_view req) { return "got " + std::string(req); });
  ASSERT_TRUE(server.ok()) << server.status();
  auto reply = ControlRequest(path, "status");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "got status");
  // A CNI GC lists every attachment: far more than a status request.
  const std::string gc = "cni " + std::string(150 * 1024, 'x');
  auto long_reply = ControlRequest(path, gc);
  ASSERT_TRUE(long_reply.ok()) << long_reply.status();
  EXPECT_EQ(*long_reply, "got " + gc);
  auto second = ControlServer::Listen(path, [](std::string_view) { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_NE(std::string(second.status().message()).find("--interface"), std::string::npos);
  server->reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "socket file removed on shutdown";
  auto gone = ControlRequest(path, "status");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ControlSocketTest, CreatesTheStateDirectoryOwnerOnlyWhateverTheUmask) {
  const std::string state = TempDir() + "/var/lib/tunnelmesh";
  const mode_t old = umask(0);
  auto server = ControlServer::Listen(ControlSocketPath(state, "tm-test1"),
                                      [](std::string_view) { return std::string(); });
  umask(old);
  ASSERT_TRUE(server.ok()) << server.status();
  for (const std::string& dir : {state, state + "/..", state + "/../.."}) {
    struct stat st {};
    ASSERT_EQ(stat(dir.c_str(), &st), 0) << dir;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << dir;
  }
}

TEST(StatusTest, ReportsPeersRoutesAndDrops) {
  InitCrypto();
  SecretKey key = SecretKey::GeneratePrivate(), peer_key = SecretKey::GeneratePrivate();
  noise::Device device(key, 1420);
  Endpoint ep(*IpAddress::Parse("192.0.2.7"), 51820);
  noise::Peer* peer =
      *device.AddPeer({DerivePublicKey(peer_key), SecretKey(), ep, std::chrono::seconds(25)});
  RouteTable routes;
  routes.Insert(*Prefix::Parse("10.0.0.2/32"), peer);
  routes.Insert(*Prefix::Parse("fd00::/64"), peer);
  device.drops().Add(noise::Drop::kMalformed, 3);
  SelfInfo self{
      "laptop", "tm0", device.identity().public_key, {*IpAddress::Parse("10.0.0.1")}, 51820};
  DataplaneDropCounts plane_drops;
  plane_drops.counts[static_cast<size_t>(DataplaneDrop::kRelayQueueFull)] = 2;
  nlohmann::json status = BuildStatus(self, device, routes, plane_drops);
  EXPECT_EQ(status["self"]["mesh_ips"][0], "10.0.0.1");
  ASSERT_EQ(status["peers"].size(), 1u);
  EXPECT_EQ(status["peers"][0]["public_key"], DerivePublicKey(peer_key).ToBase64());
  EXPECT_EQ(status["peers"][0]["endpoint"], "192.0.2.7:51820");
  EXPECT_EQ(status["peers"][0]["mesh_ips"], nlohmann::json::array({"10.0.0.2"}));
  EXPECT_EQ(status["peers"][0]["allowed_ips"].size(), 2u);
  EXPECT_EQ(status["peers"][0]["latest_handshake"], 0);
  EXPECT_EQ(status["drops"]["malformed"], 3);
  // The names of before the counters were split between the protocol and the data plane.
  for (const char* name : {"cookie_sent", "no_route", "send_failed", "tun_write_failed",
                           "packet_too_big", "no_endpoint", "source_not_allowed"}) {
    EXPECT_EQ(status["drops"][name], 0) << name;
  }
  EXPECT_EQ(status["drops"]["relay_queue_full"], 2);
  // psk_secondary_accepted counts handshakes, not drops, but is reported with them.
  EXPECT_EQ(status["drops"]["psk_secondary_accepted"], 0);
  EXPECT_EQ(status["drops"].size(), 23u);
  std::string text = FormatStatus(status, absl::Now());
  EXPECT_NE(text.find("endpoint: 192.0.2.7:51820"), std::string::npos) << text;
  EXPECT_NE(text.find("latest handshake: never"), std::string::npos) << text;
  EXPECT_NE(text.find("malformed=3"), std::string::npos) << text;
  EXPECT_EQ(text.find("attached pods"), std::string::npos) << text;

  status["attached_pods"] = {
      {{"name", "runner.ci.pod"}, {"addresses", {"10.99.1.1", "fd99::1:1"}}},
      {{"name", "old.ci.pod"}, {"addresses", {"10.99.1.2"}}, {"detaching", true}}};
  status["pod_peers"] = 5;
  text = FormatStatus(status, absl::Now());
  EXPECT_NE(text.find("attached pods:\n  runner.ci.pod: 10.99.1.1, fd99::1:1\n  old.ci.pod: "
                      "10.99.1.2 (detaching"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("pods in the mesh: 5"), std::string::npos) << text;
}

// The exit section: shown when this member uses, asked for or serves an exit peer.
TEST(StatusTest, ShowsTheExitInUseRefusalsAndClients) {
  nlohmann::json status = {{"self", {{"name", "laptop"}}}};
  status["exit"] = {{"state", "none"},
                    {"peers", nlohmann::json::array()},
                    {"refused", nlohmann::json::array()},
                    {"serving", nlohmann::json::array()}};
  EXPECT_EQ(FormatStatus(status, absl::Now()).find("exit:"), std::string::npos);
  status["exit"]["state"] = "using exit2";
  status["exit"]["peers"] = {
      {{"name", "exit1"}, {"healthy", false}, {"reason", "its agent is offline (coordinator)"}},
      {{"name", "exit2"}, {"healthy", true}, {"active", true}}};
  status["exit"]["refused"] = {{{"name", "exit3"}, {"reason", "no PeerPolicy allows it"}}};
  const std::string text = FormatStatus(status, absl::Now());
  EXPECT_NE(text.find("exit: using exit2\n  exit1: not healthy (its agent is offline "
                      "(coordinator))\n  exit2: healthy, in use\n  exit3: refused (no PeerPolicy "
                      "allows it)\n"),
            std::string::npos)
      << text;
  status["exit"] = {{"state", "none"}, {"serving", {"10.99.0.5/32", "fd99:99::5/128"}}};
  EXPECT_NE(FormatStatus(status, absl::Now())
                .find("exit: none\n  exit for: 10.99.0.5/32, "
                      "fd99:99::5/128\n"),
            std::string::npos);
}

// `status --check`: registered and connected passes; no address or no coordinator connection is
// named; a member run from a config file (no coordinator object) passes; offline peers do not
// count.
TEST(StatusTest, CheckNamesWhatIsMissing) {
  nlohmann::json status = {
      {"self",
       {{"interface", "tm0"},
        {"mesh_ips", {"10.99.0.1"}},
        {"coordinator", {{"address", "10.96.0.77:7700"}, {"connected", true}}}}},
      {"peers", {{{"name", "laptop"}, {"online", false}}}}};
  EXPECT_TRUE(StatusProblems(status).empty());
  status["self"]["coordinator"]["connected"] = false;
  status["self"]["coordinator"]["error"] = "connection refused";
  status["self"]["mesh_ips"] = nlohmann::json::array();
  const std::vector<std::string> problems = StatusProblems(status);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0], "tm0: no mesh address yet (not registered)");
  EXPECT_EQ(problems[1],
            "tm0: not connected to the coordinator at 10.96.0.77:7700 (connection refused)");
  status["self"].erase("coordinator");
  EXPECT_TRUE(StatusProblems(status).empty());
}

}  // namespace
}  // namespace tunnelmesh
