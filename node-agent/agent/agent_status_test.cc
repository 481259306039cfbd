// The lock-order inversion of the old JoinAgent is gone: `status` through the real control socket,
// in a loop, while peers join and leave (map updates posted to the control loop) and a data-plane
// thread keeps taking the device's locks. Each status must come back well within its deadline; a
// hang fails the test instead of freezing it.
#include "node-agent/agent/agent_status.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

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
                                      true);
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

}  // namespace
}  // namespace tunnelmesh
