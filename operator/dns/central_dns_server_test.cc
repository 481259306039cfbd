// CentralDnsServer with a real Coordinator (two Meshes, testing/central_dns_fixture.h), asked over
// real UDP and TCP sockets on 127.0.0.1: both meshes' zones from one server, the Mesh's TTLs and
// members' aliases, members joining and leaving, serials that follow content and not endpoint
// reports, coalesced rebuilds, and a busy port.
#include "operator/dns/central_dns_server.h"

#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "operator/dns/testing/central_dns_fixture.h"

namespace tunnelmesh {
namespace {

using dns::Message;
using dns::RData;

RData Ip(const std::string& text) { return RData(IpAddress::Parse(text).value()); }

TEST_F(CentralDnsTest, AnswersTwoMeshesFromOneServerOverUdpAndTcp) {
  const std::vector<std::string> alice = Join("alice", kDemoToken, {"web"});
  const std::vector<std::string> bob = Join("bob", kCorpToken);
  ASSERT_EQ(alice.size(), 2u);  // IPv4 and IPv6.
  ASSERT_EQ(bob.size(), 1u);
  ASSERT_TRUE(Eventually([&] { return Ask("bob.corp.example").answers.size() == 1; }));

  for (const bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "TCP" : "UDP");
    // demo: the Mesh's TTL (30 s), both families, the alias, PTR of both.
    Message r = Ask("alice.mesh", dns::kTypeA, tcp);
    EXPECT_TRUE(r.header.aa);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, Ip(alice[0]));
    EXPECT_EQ(r.answers[0].ttl, 30u);
    r = Ask("ALICE.mesh", dns::kTypeAaaa, tcp);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, Ip(alice[1]));
    r = Ask("web.mesh", dns::kTypeA, tcp);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, Ip(alice[0]));
    for (const std::string& ip : alice) {
      r = Ask(dns::ReverseName(IpAddress::Parse(ip).value()), dns::kTypePtr, tcp);
      ASSERT_EQ(r.answers.size(), 1u) << ip;
      EXPECT_EQ(r.answers[0].data, RData(std::string("alice.mesh")));
    }
    // corp: its own domain, range and default TTL (5 s).
    r = Ask("bob.corp.example", dns::kTypeA, tcp);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, Ip(bob[0]));
    EXPECT_EQ(r.answers[0].ttl, 5u);
    r = Ask(dns::ReverseName(IpAddress::Parse(bob[0]).value()), dns::kTypePtr, tcp);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, RData(std::string("bob.corp.example")));
    // Members of one mesh are not names in the other.
    EXPECT_EQ(Ask("bob.mesh", dns::kTypeA, tcp).header.rcode, dns::Rcode::kNxDomain);
    EXPECT_EQ(Ask("alice.corp.example", dns::kTypeA, tcp).header.rcode, dns::Rcode::kNxDomain);

    // NXDOMAIN and NODATA carry the zone's SOA, whose minimum is the negative TTL (7 s in demo).
    r = Ask("nobody.mesh", dns::kTypeA, tcp);
    EXPECT_EQ(r.header.rcode, dns::Rcode::kNxDomain);
    ASSERT_EQ(r.authority.size(), 1u);
    EXPECT_EQ(r.authority[0].name, "mesh");
    EXPECT_EQ(r.authority[0].ttl, 7u);
    ASSERT_TRUE(std::holds_alternative<dns::Soa>(r.authority[0].data));
    EXPECT_EQ(std::get<dns::Soa>(r.authority[0].data).minimum, 7u);
    EXPECT_EQ(std::get<dns::Soa>(r.authority[0].data).mname, "ns.mesh");
    r = Ask("bob.corp.example", dns::kTypeTxt, tcp);
    EXPECT_EQ(r.header.rcode, dns::Rcode::kNoError);
    EXPECT_TRUE(r.answers.empty());
    ASSERT_EQ(r.authority.size(), 1u);
    EXPECT_EQ(r.authority[0].name, "corp.example");
    EXPECT_EQ(std::get<dns::Soa>(r.authority[0].data).minimum, 5u);

    // NS: ns.<domain>, with the server's address as glue.
    r = Ask("corp.example", dns::kTypeNs, tcp);
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, RData(std::string("ns.corp.example")));
    ASSERT_EQ(r.additional.size(), 1u);
    EXPECT_EQ(r.additional[0].name, "ns.corp.example");
    EXPECT_EQ(r.additional[0].data, Ip("127.0.0.1"));

    // No upstream: everything else is refused.
    EXPECT_EQ(Ask("example.com", dns::kTypeA, tcp).header.rcode, dns::Rcode::kRefused);
    EXPECT_EQ(Ask("1.0.0.127.in-addr.arpa", dns::kTypePtr, tcp).header.rcode, dns::Rcode::kRefused);
  }
  const CentralDnsStats stats = central_->stats();
  EXPECT_EQ(stats.queries[static_cast<size_t>(dns::Outcome::kRefused)], 4u);
  EXPECT_GE(stats.queries[static_cast<size_t>(dns::Outcome::kNxDomain)], 6u);
  EXPECT_EQ(stats.queries[static_cast<size_t>(dns::Outcome::kNoData)], 2u);
  EXPECT_EQ(stats.truncated, 0u);
  EXPECT_EQ(stats.tcp_refused, 0u);
}

TEST_F(CentralDnsTest, MemberThatJoinsResolvesAndOneThatLeavesDoesNot) {
  EXPECT_EQ(Ask("carol.mesh").header.rcode, dns::Rcode::kNxDomain);
  PublicKey carol;
  const std::vector<std::string> ips = Join("carol", kDemoToken, {}, &carol);
  ASSERT_FALSE(ips.empty());
  ASSERT_TRUE(Eventually([&] {
    const Message r = Ask("carol.mesh");
    return r.answers.size() == 1 && r.answers[0].data == Ip(ips[0]);
  })) << "carol.mesh did not resolve within 5 s of her registration";
  ASSERT_TRUE(coordinator_->Leave(carol).ok());
  ASSERT_TRUE(Eventually([&] { return Ask("carol.mesh").header.rcode == dns::Rcode::kNxDomain; }))
      << "carol.mesh still resolved 5 s after she left";
  EXPECT_EQ(Ask(dns::ReverseName(IpAddress::Parse(ips[0]).value()), dns::kTypePtr).header.rcode,
            dns::Rcode::kNxDomain);
}

TEST_F(CentralDnsTest, SerialFollowsContentNotEndpointReports) {
  PublicKey alice;
  Join("alice", kDemoToken, {}, &alice);
  Join("bob", kCorpToken);
  ASSERT_TRUE(CaughtUp());
  const uint32_t mesh_serial = Serial("mesh");
  const uint32_t corp_serial = Serial("corp.example");
  ASSERT_NE(mesh_serial, 0u);
  ASSERT_NE(corp_serial, 0u);
  const uint64_t built = central_->stats().zones_built;

  // Endpoint reports move the coordinator's version, not a name.
  const uint64_t before = coordinator_->DnsZones().at(0).version;
  ASSERT_TRUE(coordinator_->ReportEndpoints(alice, {"203.0.113.7:51820"}).ok());
  ASSERT_TRUE(coordinator_->ReportEndpoints(alice, {"203.0.113.7:40000"}).ok());
  ASSERT_GT(coordinator_->DnsZones().at(0).version, before);
  ASSERT_TRUE(CaughtUp());
  EXPECT_EQ(Serial("mesh"), mesh_serial);
  EXPECT_EQ(Serial("corp.example"), corp_serial);
  EXPECT_EQ(central_->stats().zones_built, built);

  // A new member of demo moves demo's serial (to the version of that change), not corp's.
  Join("dave", kDemoToken);
  ASSERT_TRUE(CaughtUp());
  const uint32_t moved = Serial("mesh");
  EXPECT_GT(moved, mesh_serial);
  EXPECT_EQ(moved, static_cast<uint32_t>(coordinator_->DnsZones().at(0).version));
  EXPECT_EQ(Serial("corp.example"), corp_serial);
  EXPECT_EQ(central_->stats().zones_built, built + 1);
}

TEST_F(CentralDnsTest, BurstsOfChangesCoalesce) {
  PublicKey alice;
  Join("alice", kDemoToken, {}, &alice);
  ASSERT_TRUE(CaughtUp());
  const uint64_t checks = central_->stats().zone_checks;
  const auto start = std::chrono::steady_clock::now();
  constexpr int kReports = 200;
  for (int i = 0; i < kReports; ++i) {
    ASSERT_TRUE(
        coordinator_->ReportEndpoints(alice, {"203.0.113.7:" + std::to_string(10000 + i)}).ok());
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(CaughtUp());
  const auto total = std::chrono::steady_clock::now() - start;
  // At most one check per kMinRebuildInterval, plus the one running when the burst began and the
  // one that catches up after it.
  const int64_t bound = 2 + std::chrono::duration_cast<std::chrono::milliseconds>(total).count() /
                                absl::ToInt64Milliseconds(CentralDnsServer::kMinRebuildInterval);
  const uint64_t ran = central_->stats().zone_checks - checks;
  EXPECT_LE(static_cast<int64_t>(ran), bound)
      << kReports << " reports in "
      << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms";
  EXPECT_LT(ran, static_cast<uint64_t>(kReports));
}

TEST_F(CentralDnsTest, BusyPortIsAnErrorNamingTheFlags) {
  absl::StatusOr<std::unique_ptr<CentralDnsServer>> second = CentralDnsServer::Start(
      coordinator_.get(), std::make_shared<ZoneChangeSignal>(),
      {.listen_address = kLoopback, .port = at_.port(), .server_addresses = {}});
  ASSERT_FALSE(second.ok());
  const std::string message(second.status().message());
  EXPECT_NE(message.find("--dns-port"), std::string::npos) << message;
  EXPECT_NE(message.find("--listen-address"), std::string::npos) << message;
  EXPECT_NE(message.find("--no-dns"), std::string::npos) << message;
}

}  // namespace
}  // namespace tunnelmesh
