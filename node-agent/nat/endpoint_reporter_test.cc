#include "node-agent/nat/endpoint_reporter.h"

#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

class StunTransport final : public PathTransport {
 public:
  void SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) override {
    last.assign(bytes.begin(), bytes.end());
    last_to = to;
  }
  void UseDirect(const PublicKey&, const Endpoint&) override {}
  void UseRelay(const PublicKey&) override {}
  void SuggestEndpoint(const PublicKey&, const Endpoint&) override {}
  std::vector<uint8_t> last;
  Endpoint last_to;
};

Endpoint E(const char* text) { return *Endpoint::Parse(text); }

// What the STUN server answers to the request the reporter sent.
std::vector<uint8_t> Answer(const std::vector<uint8_t>& request_bytes, const Endpoint& mapped) {
  stun::BindingRequest request;
  EXPECT_EQ(stun::ParseBindingRequest(request_bytes, &request), stun::ParseResult::kOk);
  std::vector<uint8_t> out(stun::kMaxEncodedSize);
  out.resize(stun::EncodeBindingSuccessResponse(request, mapped, {}, absl::MakeSpan(out)));
  return out;
}

TEST(EndpointReporterTest, StunResponseUpdatesTheReflexiveEndpointAndMarksTheReportDirty) {
  StunTransport transport;
  uint8_t next = 0;
  EndpointReporter reporter(&transport, [&next] {
    stun::TransactionId id{};
    id[0] = ++next;
    return id;
  });
  // The first report is due at once (with no reflexive address yet).
  EXPECT_TRUE(reporter.dirty());
  EndpointReport first = reporter.TakeReport({*IpAddress::Parse("192.168.1.5")}, 51820);
  EXPECT_EQ(first.endpoints, std::vector<std::string>{"192.168.1.5:51820"});
  reporter.ReportDone(first, true);
  EXPECT_FALSE(reporter.dirty());

  const Endpoint server = E("198.51.100.1:3478");
  reporter.SendStunRequest(server);
  EXPECT_EQ(transport.last_to, server);
  const std::vector<uint8_t> request = transport.last;
  EXPECT_TRUE(reporter.OnStunDatagram(Answer(request, E("203.0.113.7:6000"))));
  EXPECT_EQ(reporter.reflexive(), E("203.0.113.7:6000"));
  EXPECT_TRUE(reporter.dirty());
  // The same answer again changes nothing.
  EXPECT_FALSE(reporter.OnStunDatagram(Answer(request, E("203.0.113.7:6000"))));

  EndpointReport report = reporter.TakeReport(
      {*IpAddress::Parse("192.168.1.5"), *IpAddress::Parse("203.0.113.7")}, 6000);
  EXPECT_EQ(report.endpoints, (std::vector<std::string>{"203.0.113.7:6000", "192.168.1.5:6000"}));
  EXPECT_FALSE(reporter.dirty());
  // A failed report is due again; a successful one becomes what call-me-maybe lists.
  reporter.ReportDone(report, false);
  EXPECT_TRUE(reporter.dirty());
  report = reporter.TakeReport({}, 6000);
  reporter.ReportDone(report, true);
  EXPECT_EQ(reporter.reported(), std::vector<std::string>{"203.0.113.7:6000"});
}

TEST(EndpointReporterTest, StaleOrForeignResponsesAreIgnored) {
  StunTransport transport;
  uint8_t next = 0;
  EndpointReporter reporter(&transport, [&next] {
    stun::TransactionId id{};
    id[0] = ++next;
    return id;
  });
  reporter.SendStunRequest(E("198.51.100.1:3478"));
  const std::vector<uint8_t> old_request = transport.last;
  reporter.SendStunRequest(E("198.51.100.1:3478"));
  EXPECT_FALSE(reporter.OnStunDatagram(Answer(old_request, E("203.0.113.7:6000"))));
  EXPECT_FALSE(reporter.reflexive().has_value());
  EXPECT_FALSE(reporter.OnStunDatagram(std::vector<uint8_t>{1, 2, 3}));
}

TEST(EndpointReporterTest, PathChangesMakeAReportDueWithCountsAndEachPeersPath) {
  StunTransport transport;
  EndpointReporter reporter(&transport);
  reporter.ReportDone(reporter.TakeReport({}, 1), true);
  reporter.SetPaths({});
  EXPECT_FALSE(reporter.dirty());
  const PublicKey a = DerivePublicKey(SecretKey::GeneratePrivate());
  const PublicKey b = DerivePublicKey(SecretKey::GeneratePrivate());
  const PublicKey c = DerivePublicKey(SecretKey::GeneratePrivate());
  reporter.SetPaths(
      {{a, disco::PathKind::kDirect}, {b, disco::PathKind::kRelay}, {c, disco::PathKind::kRelay}});
  EXPECT_TRUE(reporter.dirty());
  EndpointReport report = reporter.TakeReport({}, 1);
  EXPECT_EQ(report.direct, 1u);
  EXPECT_EQ(report.relayed, 2u);
  EXPECT_EQ(report.ssh, 0u);
  ASSERT_EQ(report.paths.size(), 3u);
  EXPECT_EQ(report.paths[1], (ReportedPath{b, disco::PathKind::kRelay}));
  // The same counts with another peer on the relay is a change too.
  reporter.SetPaths(
      {{a, disco::PathKind::kRelay}, {b, disco::PathKind::kDirect}, {c, disco::PathKind::kRelay}});
  EXPECT_TRUE(reporter.dirty());
  reporter.TakeReport({}, 1);
  // A change to SSH alone makes a report due, counted apart.
  reporter.SetPaths(
      {{a, disco::PathKind::kRelay}, {b, disco::PathKind::kDirect}, {c, disco::PathKind::kSsh}});
  EXPECT_TRUE(reporter.dirty());
  EXPECT_EQ(reporter.TakeReport({}, 1).ssh, 1u);
}

TEST(EndpointReporterTest, ReportsAtMostTheBoundOfPathsButCountsThemAll) {
  StunTransport transport;
  EndpointReporter reporter(&transport);
  std::vector<ReportedPath> paths(kMaxReportedPaths + 5);
  for (size_t i = 0; i < paths.size(); ++i) {
    paths[i].peer.bytes[0] = static_cast<uint8_t>(i >> 8);
    paths[i].peer.bytes[1] = static_cast<uint8_t>(i);
    paths[i].kind = disco::PathKind::kDirect;
  }
  reporter.SetPaths(paths);
  EndpointReport report = reporter.TakeReport({}, 1);
  EXPECT_EQ(report.paths.size(), kMaxReportedPaths);
  EXPECT_EQ(report.direct, kMaxReportedPaths + 5);
}

}  // namespace
}  // namespace tunnelmesh
