// The lock-order inversion of the old JoinAgent is gone: `status` through the real control socket,
// in a loop, while peers join and leave (map updates posted to the control loop) and a data-plane
// thread keeps taking the device's locks. Each status must come back well within its deadline; a
// hang fails the test instead of freezing it. Also: the control loop's dropped posts in the report,
// and FormatStatus over malformed replies.
#include "node-agent/agent/agent_status.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/base/snapshot.h"
#include "nlohmann/json.hpp"
#include "node-agent/agent/control_loop.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/peer/testing/fake_route_installer.h"

namespace tunnelmesh {
namespace {

struct Member {
  SecretKey secret = SecretKey::GeneratePrivate();
  PublicKey key = DerivePublicKey(secret);
};

coord::Peer MapPeer(const Member& m, int index) {
  coord::Peer p;
  p.set_public_key(PublicKeyBytes(m.key));
  p.set_name("peer" + std::to_string(index));
  const std::string ip = "10.99.0." + std::to_string(index + 2);
  p.add_mesh_ips(ip);
  p.add_allowed_ips(ip + "/32");
  p.add_endpoints("127.0.0.1:" + std::to_string(40000 + index));
  return p;
}

TEST(AgentStatusTest, StatusDuringPeerChurnNeverHangs) {
  InitCrypto();
  SystemClock clock;
  Member self;
  noise::Device device(self.secret, 1420);
  FakeRouteInstaller link;
  Snapshot<RouteTable> published{std::make_shared<RouteTable>()};
  PeerTable table(
      &device, self.key, &link,
      [&published](std::shared_ptr<const RouteTable> routes) { published.Store(routes); }, &clock);
  table.SetMeshCidrs({*Prefix::Parse("10.99.0.0/16")});
  ControlLoop loop(&clock);
  loop.Start();

  char dir_template[] = "/tmp/tm-agent-status-XXXXXX";
  const std::string path = ControlSocketPath(mkdtemp(dir_template), "tm-status0");
  SelfInfo self_info{"self", "tm-status0", self.key, {*IpAddress::Parse("10.99.0.1")}, 51820};
  auto server = ControlServer::Listen(path, [&](std::string_view request) -> std::string {
    if (request != "status") return "{}";
    std::optional<std::string> status = loop.Call<std::string>(
        [&] {
          return BuildAgentStatusJson(self_info, device, DataplaneDropCounts{}, table, nullptr,
                                      true, loop.dropped(), AgentHealth{});
        },
        absl::Seconds(5));
    return status ? *status : std::string("{\"error\": \"timeout\"}");
  });
  ASSERT_TRUE(server.ok()) << server.status();

  std::atomic<bool> stop{false};
  // Peers join and leave: map updates posted to the control loop, as the watch thread does.
  std::vector<Member> members(8);
  std::thread churn([&] {
    for (int round = 0; !stop.load(); ++round) {
      const int i = round % static_cast<int>(members.size());
      coord::MapUpdate update;
      if ((round / static_cast<int>(members.size())) % 2 == 0) {
        *update.add_upsert_peers() = MapPeer(members[i], i);
      } else {
        update.add_removed_peers(PublicKeyBytes(members[i].key));
      }
      // The watch thread posts without waiting; here each update is waited for, so the churn
      // cannot fill the loop's bounded queue and crowd out the status calls under test.
      loop.Call<bool>(
          [&table, update = std::move(update)] {
            table.Apply(update);
            return true;
          },
          absl::Seconds(5));
      std::this_thread::yield();
    }
  });
  // A data-plane thread: route lookups and device timers, which take the device's locks.
  std::thread data([&] {
    const IpAddress probe = *IpAddress::Parse("10.99.0.3");
    while (!stop.load()) {
      std::shared_ptr<const RouteTable> routes = published.Load();
      if (noise::Peer* const* peer = routes->Lookup(probe); peer != nullptr) {
        (void)(*peer)->endpoint();
      }
      device.Tick(clock.Now(), absl::Now(),
                  [](const TransportEndpoint&, absl::Span<const uint8_t>) {});
    }
  });

  auto statuses = std::async(std::launch::async, [&] {
    int ok = 0;
    for (int i = 0; i < 300; ++i) {
      absl::StatusOr<std::string> reply = ControlRequest(path, "status");
      if (!reply.ok()) continue;
      nlohmann::json json = nlohmann::json::parse(*reply, nullptr, false);
      if (!json.is_discarded() && json.contains("peers") && json["self"]["name"] == "self") ++ok;
    }
    return ok;
  });
  const bool finished = statuses.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  if (!finished) {
    // A hung status cannot be joined: report and leave rather than freeze the test run.
    ADD_FAILURE() << "status did not come back within 60 s: the agent is deadlocked";
    std::fflush(nullptr);
    _exit(1);
  }
  EXPECT_EQ(statuses.get(), 300);
  stop = true;
  churn.join();
  data.join();
  server->reset();
  loop.Stop();
}

// Posts the control loop refused (its queue full) are in `status --json` and, when there are any,
// in the text `status` prints.
TEST(AgentStatusTest, ControlLoopDropsAreReported) {
  InitCrypto();
  SystemClock clock;
  Member self;
  noise::Device device(self.secret, 1420);
  FakeRouteInstaller link;
  PeerTable table(
      &device, self.key, &link, [](std::shared_ptr<const RouteTable>) {}, &clock);
  SelfInfo self_info{"self", "tm-status0", self.key, {*IpAddress::Parse("10.99.0.1")}, 51820};
  // A loop that never runs, with room for two closures: the third and fourth posts are dropped.
  ControlLoop loop(&clock, /*max_queued=*/2);
  for (int i = 0; i < 4; ++i) (void)loop.Post([] {});
  ASSERT_EQ(loop.dropped(), 2u);

  nlohmann::json status = nlohmann::json::parse(BuildAgentStatusJson(
      self_info, device, DataplaneDropCounts{}, table, nullptr, true, loop.dropped(), {}));
  EXPECT_EQ(status["control_loop"]["posts_dropped"], 2);
  const std::string text = FormatStatus(status, absl::Now());
  EXPECT_NE(text.find("control loop: 2 posts dropped (its queue was full)"), std::string::npos)
      << text;

  status = nlohmann::json::parse(
      BuildAgentStatusJson(self_info, device, DataplaneDropCounts{}, table, nullptr, true, 0, {}));
  EXPECT_EQ(status["control_loop"]["posts_dropped"], 0);
  EXPECT_EQ(FormatStatus(status, absl::Now()).find("control loop"), std::string::npos);

  // Join: the mesh, the coordinator's and the relay's state, and a warning for each one down.
  AgentHealth health;
  health.mesh = "demo";
  health.coordinator = "198.51.100.1:7700";
  health.coordinator_error = "connection refused";
  health.coordinator_changed = absl::FromUnixSeconds(1'800'000'000);
  health.has_relay = true;
  status = nlohmann::json::parse(BuildAgentStatusJson(self_info, device, DataplaneDropCounts{},
                                                      table, nullptr, true, 0, health));
  EXPECT_EQ(status["self"]["mesh"], "demo");
  EXPECT_EQ(status["self"]["coordinator"]["connected"], false);
  EXPECT_EQ(status["self"]["coordinator"]["error"], "connection refused");
  EXPECT_EQ(status["self"]["coordinator"]["since"], 1'800'000'000);
  EXPECT_EQ(status["self"]["relay"], "disconnected");
  ASSERT_EQ(status["self"]["warnings"].size(), 2u) << status["self"];
  const std::string health_text = FormatStatus(status, absl::FromUnixSeconds(1'800'000'065));
  EXPECT_NE(health_text.find("  mesh: demo\n"), std::string::npos) << health_text;
  EXPECT_NE(health_text.find("  coordinator: 198.51.100.1:7700, not connected for 1 min, 5 s "
                             "(connection refused)\n"),
            std::string::npos)
      << health_text;
  EXPECT_NE(health_text.find("  relay: disconnected\n"), std::string::npos) << health_text;
  EXPECT_NE(health_text.find("warning: not connected to the coordinator"), std::string::npos)
      << health_text;
  health.coordinator_connected = true;
  health.relay_connected = true;
  status = nlohmann::json::parse(BuildAgentStatusJson(self_info, device, DataplaneDropCounts{},
                                                      table, nullptr, true, 0, health));
  EXPECT_TRUE(status["self"]["warnings"].empty());
  EXPECT_EQ(status["self"]["relay"], "connected");
}

// Every value of `json`, replaced in turn by `replacement` (a copy each time); `visit` sees each
// variant.
void ForEachVariant(const nlohmann::json& json, const nlohmann::json& replacement,
                    const std::function<void(const nlohmann::json&)>& visit) {
  const nlohmann::json flat = json.flatten();
  for (const auto& [pointer, value] : flat.items()) {
    // Each leaf and each of its parents (objects and arrays are replaced whole, too).
    for (nlohmann::json::json_pointer at(pointer); !at.empty(); at = at.parent_pointer()) {
      nlohmann::json variant = json;
      variant[at] = replacement;
      visit(variant);
    }
  }
}

// The reply `status` formats comes from another process: a malformed one prints what it can and
// never throws (the checked reads of FormatStatus).
TEST(AgentStatusTest, FormatStatusSurvivesMalformedReplies) {
  nlohmann::json valid = {{"self",
                           {{"name", "laptop"},
                            {"interface", "tm0"},
                            {"public_key", "AAAA"},
                            {"mesh_ips", {"10.99.0.1"}},
                            {"listen_port", 51820},
                            {"metrics", "127.0.0.1:7710"}}},
                          {"peers",
                           {{{"name", "db"},
                             {"public_key", "BBBB"},
                             {"mesh_ips", {"10.99.0.2"}},
                             {"allowed_ips", {"10.99.0.2/32"}},
                             {"endpoint", "192.0.2.7:51820"},
                             {"path", "direct"},
                             {"rtt_ms", 1.25},
                             {"latest_handshake", 1700000000},
                             {"rx_bytes", 10},
                             {"tx_bytes", 20},
                             {"persistent_keepalive", 25}}}},
                          {"drops", {{"malformed", 3}}},
                          {"ssh", {{"port", 7722}, {"host_key_mismatches", 2}}},
                          {"control_loop", {{"posts_dropped", 1}}},
                          {"filter",
                           {{"enabled", true},
                            {"default_action", "deny"},
                            {"rules", 3},
                            {"policy_count", 1},
                            {"tracked_flows", 2},
                            {"drops", {{"default_denied", 5}}},
                            {"rule_sets_rejected", 1}}}};
  const std::string text = FormatStatus(valid, absl::FromUnixSeconds(1700000065));
  EXPECT_NE(text.find("latest handshake: 1 min, 5 s ago"), std::string::npos) << text;
  EXPECT_NE(text.find("  path: direct, rtt 1.2 ms\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  metrics: 127.0.0.1:7710\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  ssh: port 7722, 2 wrong host keys refused\n"), std::string::npos) << text;
  EXPECT_NE(text.find("malformed=3"), std::string::npos) << text;
  EXPECT_NE(text.find("filter: on, default deny, 3 rules"), std::string::npos) << text;

  const std::vector<nlohmann::json> replacements = {nullptr,
                                                    "text",
                                                    -1,
                                                    int64_t{-9'000'000'000'000'000'000},
                                                    uint64_t{18'000'000'000'000'000'000u},
                                                    2.5,
                                                    true,
                                                    nlohmann::json::array({1, nullptr, "x"}),
                                                    nlohmann::json::object({{"x", 1}})};
  int variants = 0;
  for (const nlohmann::json& replacement : replacements) {
    ForEachVariant(valid, replacement, [&](const nlohmann::json& variant) {
      ++variants;
      std::string out;
      EXPECT_NO_THROW(out = FormatStatus(variant, absl::FromUnixSeconds(1700000065)))
          << variant.dump();
      EXPECT_NE(out.find("interface: "), std::string::npos) << variant.dump();
    });
    EXPECT_NO_THROW((void)FormatStatus(replacement, absl::Now())) << replacement.dump();
  }
  EXPECT_GT(variants, 200);
}

}  // namespace
}  // namespace tunnelmesh
