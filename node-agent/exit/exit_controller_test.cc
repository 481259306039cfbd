#include "node-agent/exit/exit_controller.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "lib/base/testing/fake_clock.h"
#include "node-agent/exit/testing/recording_runner.h"
#include "node-agent/peer/testing/fake_route_installer.h"

namespace tunnelmesh {
namespace {

struct Member {
  SecretKey secret = SecretKey::GeneratePrivate();
  PublicKey key = DerivePublicKey(secret);
};

coord::Peer MapPeer(const Member& m, const std::string& name, const std::string& ip,
                    const std::string& endpoint) {
  coord::Peer p;
  p.set_public_key(PublicKeyBytes(m.key));
  p.set_name(name);
  p.add_allowed_ips(ip + "/32");
  p.add_mesh_ips(ip);
  p.add_endpoints(endpoint);
  p.set_exit_peer(true);
  return p;
}

class ExitControllerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }

  ExitControllerTest()
      : device_(self_.secret, 1420),
        peers_(
            &device_, self_.key, &link_,
            [this](std::shared_ptr<const RouteTable> routes) { published_ = std::move(routes); },
            &clock_) {
    peers_.SetMeshCidrs({*Prefix::Parse("10.99.0.0/16")});
    std::filesystem::create_directories(dir_);
    coord::MapUpdate full;
    full.set_full(true);
    *full.add_upsert_peers() = MapPeer(exit1_, "exit1", "10.99.0.2", "192.0.2.1:51820");
    *full.add_upsert_peers() = MapPeer(exit2_, "exit2", "10.99.0.3", "198.51.100.1:51820");
    peers_.Apply(full);
  }
  ~ExitControllerTest() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<ExitController> Make(ExitOptions options) {
    auto runner = std::make_unique<RecordingRunner>();
    runner_ = runner.get();
    auto controller = std::make_unique<ExitController>(
        "tm0", options, std::move(runner), dir_, &peers_,
        [this](const PublicKey& key) { return samples_[key]; },
        [] { return std::vector<Prefix>{*Prefix::Parse("192.168.1.0/24")}; });
    controller->SetMesh({*Prefix::Parse("10.99.0.0/16")}, /*ipv6=*/false);
    return controller;
  }

  coord::ExitConfig Use(std::vector<const Member*> exits) {
    coord::ExitConfig config;
    for (const Member* m : exits) config.add_use_public_keys(PublicKeyBytes(m->key));
    return config;
  }

  noise::Peer* InternetOwner() const {
    noise::Peer* const* found = published_->Lookup(*IpAddress::Parse("93.184.216.34"));
    return found == nullptr ? nullptr : *found;
  }

  Member self_, exit1_, exit2_;
  FakeClock clock_;
  noise::Device device_;
  FakeRouteInstaller link_;
  std::shared_ptr<const RouteTable> published_;
  PeerTable peers_;
  std::string dir_ = (std::filesystem::temp_directory_path() /
                      ("exit_controller_test." + std::to_string(getpid())))
                         .string();
  std::map<PublicKey, ExitSample> samples_;
  RecordingRunner* runner_ = nullptr;
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

TEST_F(ExitControllerTest, RoutesTheInternetThroughTheFirstExitAndFailsOver) {
  auto exits = Make({});
  exits->SetServiceAddresses({*IpAddress::Parse("203.0.113.10")}, now_);
  EXPECT_TRUE(runner_->commands.empty()) << "no exit asked for: nothing touched";
  exits->ApplyConfig(Use({&exit1_, &exit2_}), now_);
  EXPECT_EQ(InternetOwner(), device_.FindPeer(exit1_.key));
  const std::string rules = runner_->All();
  EXPECT_TRUE(absl::StrContains(rules, "rule add to 203.0.113.10/32 lookup main")) << rules;
  EXPECT_TRUE(absl::StrContains(rules, "rule add to 192.0.2.1/32 lookup main"));
  EXPECT_TRUE(absl::StrContains(rules, "rule add to 198.51.100.1/32 lookup main"));
  EXPECT_TRUE(absl::StrContains(rules, "rule add not fwmark"));
  EXPECT_FALSE(absl::StrContains(rules, "192.168.1.0/24")) << "no --exit-allow-lan";
  EXPECT_EQ(exits->Status(now_)["using"], "exit1");

  exits->SetPresence(exit1_.key, false, now_);
  EXPECT_EQ(InternetOwner(), device_.FindPeer(exit2_.key));
  const nlohmann::json status = exits->Status(now_);
  EXPECT_EQ(status["using"], "exit2");
  EXPECT_EQ(status["peers"][0]["healthy"], false);
  EXPECT_EQ(status["peers"][0]["reason"], "its agent is offline (coordinator)");
}

TEST_F(ExitControllerTest, FailClosedKeepsRulesFailOpenLiftsThem) {
  auto closed = Make({});
  closed->ApplyConfig(Use({&exit1_}), now_);
  closed->SetPresence(exit1_.key, false, now_);
  EXPECT_EQ(InternetOwner(), nullptr);  // Dropped by the data plane as no_route.
  nlohmann::json status = closed->Status(now_);
  EXPECT_EQ(status["routing"], true);
  EXPECT_EQ(status["state"], "no healthy exit: internet traffic is dropped (fail-closed)");
  closed->Stop();
  EXPECT_TRUE(absl::StrContains(runner_->All(), "rule del not fwmark"));

  ExitOptions fail_open;
  fail_open.fail_open = true;
  auto open = Make(fail_open);
  open->ApplyConfig(Use({&exit1_}), now_);
  EXPECT_EQ(open->Status(now_)["routing"], true);
  open->SetPresence(exit1_.key, false, now_);
  status = open->Status(now_);
  EXPECT_EQ(status["routing"], false);
  EXPECT_EQ(status["state"], "no healthy exit: internet traffic goes out directly (fail-open)");
  open->SetPresence(exit1_.key, true, now_);
  open->Tick(now_ + kExitSettle);  // A restarted exit settles first.
  EXPECT_EQ(open->Status(now_)["routing"], true);
  EXPECT_EQ(InternetOwner(), device_.FindPeer(exit1_.key));
}

TEST_F(ExitControllerTest, RefusedWithExitPeerFlagFailsClosed) {
  ExitOptions requested;
  requested.requested = true;
  auto exits = Make(requested);
  coord::ExitConfig config;
  auto* refusal = config.add_refused();
  refusal->set_name("exit1");
  refusal->set_reason("no PeerPolicy allows it");
  exits->ApplyConfig(config, now_);
  const nlohmann::json status = exits->Status(now_);
  EXPECT_EQ(status["routing"], true);
  EXPECT_EQ(status["refused"][0]["reason"], "no PeerPolicy allows it");
  EXPECT_EQ(InternetOwner(), nullptr);
}

TEST_F(ExitControllerTest, AllowLanAndDns) {
  ExitOptions options;
  options.allow_lan = true;
  options.dns = *IpAddress::Parse("203.0.113.53");
  auto exits = Make(options);
  exits->ApplyConfig(Use({&exit1_}), now_);
  const std::string all = runner_->All();
  EXPECT_TRUE(absl::StrContains(all, "to 192.168.1.0/24 ipproto udp dport 53"));
  EXPECT_TRUE(absl::StrContains(all, "rule add to 192.168.1.0/24 lookup main"));
  EXPECT_TRUE(absl::StrContains(all, "dnat ip to 203.0.113.53:53"));
}

TEST_F(ExitControllerTest, ServesClientPrefixesAsAnExit) {
  auto exits = Make({});
  coord::ExitConfig config;
  config.add_client_prefixes("10.99.0.9/32");
  exits->ApplyConfig(config, now_);
  EXPECT_TRUE(absl::StrContains(runner_->All(), "elements = { 10.99.0.9/32 }"));
  EXPECT_FALSE(absl::StrContains(runner_->All(), "rule add")) << "serving is not using";
  const nlohmann::json status = exits->Status(now_);
  EXPECT_EQ(status["serving"][0], "10.99.0.9/32");
  EXPECT_EQ(status["forwarding"], true);
}

}  // namespace
}  // namespace tunnelmesh
