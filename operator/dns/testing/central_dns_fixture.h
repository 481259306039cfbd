// For the central DNS server's tests: a real Coordinator over an in-memory member store with two
// Meshes, and a CentralDnsServer on 127.0.0.1 (a free port) wired as the operator wires them (the
// coordinator's on_change wakes the server). Members join with Register, as agents do.
//   demo: domain "mesh", 10.99.0.0/16 and fd99:99::/48, spec.dns ttlSeconds 30 and
//         negativeTTLSeconds 7, join token kDemoToken
//   corp: domain "corp.example", 10.42.0.0/16, default TTLs (5 s), join token kCorpToken
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/dns/server_test_client.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"
#include "operator/dns/central_dns_server.h"

namespace tunnelmesh {

inline constexpr char kDemoToken[] = "the demo mesh's join token, for tests";
inline constexpr char kCorpToken[] = "the corp mesh's join token, for tests";

inline std::string TwoMeshManifests() {
  return std::string(
             "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: demo}\nspec:\n"
             "  ipv4CIDR: 10.99.0.0/16\n  ipv6CIDR: fd99:99::/48\n  domain: mesh\n"
             "  dns: {ttlSeconds: 30, negativeTTLSeconds: 7}\n"
             "  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}\n---\n"
             "apiVersion: v1\nkind: Secret\nmetadata: {namespace: tunnelmesh, name: demo-join}\n"
             "stringData: {token: \"") +
         kDemoToken +
         "\"}\n---\n"
         "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: corp}\nspec:\n"
         "  ipv4CIDR: 10.42.0.0/16\n  domain: corp.example\n"
         "  joinTokenSecretRef: {namespace: tunnelmesh, name: corp-join, key: token}\n---\n"
         "apiVersion: v1\nkind: Secret\nmetadata: {namespace: tunnelmesh, name: corp-join}\n"
         "stringData: {token: \"" +
         kCorpToken + "\"}\n";
}

class CentralDnsTest : public ::testing::Test {
 protected:
  static inline const IpAddress kLoopback = IpAddress::Parse("127.0.0.1").value();

  void SetUp() override {
    changes_ = std::make_shared<ZoneChangeSignal>();
    Coordinator::Options options;
    // The tests report endpoints in bursts far beyond an agent's rate.
    options.reports_per_member = {.rate = 1e6, .burst = 1e6};
    options.on_change = [changes = changes_] { changes->Notify(); };
    coordinator_ = std::make_unique<Coordinator>(&store_, options);
    std::vector<MeshSpec> meshes = Meshes(TwoMeshManifests());
    ASSERT_EQ(meshes.size(), 2u);
    coordinator_->SetMeshes(std::move(meshes));
    absl::StatusOr<std::unique_ptr<CentralDnsServer>> central = CentralDnsServer::Start(
        coordinator_.get(), changes_,
        {.listen_address = kLoopback, .port = 0, .server_addresses = {kLoopback}});
    ASSERT_TRUE(central.ok()) << central.status();
    central_ = *std::move(central);
    at_ = central_->endpoints()[0];
    ASSERT_NE(at_.port(), 0);
  }

  // Registers `name` with the mesh of `token`; its mesh IPs (v4 first).
  std::vector<std::string> Join(const std::string& name, const std::string& token,
                                std::vector<std::string> aliases = {}, PublicKey* key = nullptr) {
    const PublicKey k = NewKey();
    if (key != nullptr) *key = k;
    coordinator::v1::RegisterRequest request = Request(k, name, token);
    request.set_mesh(token == std::string(kDemoToken) ? "demo" : "corp");
    for (const std::string& alias : aliases) request.add_aliases(alias);
    absl::StatusOr<coordinator::v1::RegisterResponse> r = RegisterAs(*coordinator_, request);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    std::vector<std::string> ips;
    for (const std::string& ip : r->mesh_ips()) ips.push_back(ip.substr(0, ip.find('/')));
    return ips;
  }

  // Polls `done` every 10 ms for up to 5 s.
  static bool Eventually(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  // Waits until the server has compared its zones with the coordinator's current state.
  bool CaughtUp() {
    const uint64_t version = coordinator_->DnsZones().at(0).version;
    return Eventually([&] { return central_->checked_version() >= version; });
  }

  dns::Message Ask(const std::string& name, uint16_t type = dns::kTypeA, bool tcp = false) {
    const std::vector<uint8_t> q = dns::testing::QueryBytes(++next_id_, name, type);
    return tcp ? dns::testing::AskTcp(at_, q) : dns::testing::AskUdp(at_, q);
  }

  // The serial of the SOA at `apex` (0 when there is none).
  uint32_t Serial(const std::string& apex) {
    const dns::Message r = Ask(apex, dns::kTypeSoa);
    if (r.answers.size() != 1) return 0;
    const auto* soa = std::get_if<dns::Soa>(&r.answers[0].data);
    return soa == nullptr ? 0 : soa->serial;
  }

  FakeMemberStore store_;
  std::shared_ptr<ZoneChangeSignal> changes_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CentralDnsServer> central_;
  Endpoint at_;
  uint16_t next_id_ = 0;
};

}  // namespace tunnelmesh
