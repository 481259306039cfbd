// FakeNat: every RFC 4787 mapping and filtering behaviour, mapping timeouts with and without
// inbound refresh, seeded port allocation.
#include "node-agent/nat/testing/fake_nat.h"

#include <poll.h>

#include <string>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"

namespace tunnelmesh {
namespace {

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

void SendText(Bind& bind, const Endpoint& to, const std::string& text = "x") {
  const OutgoingDatagram d{reinterpret_cast<const uint8_t*>(text.data()), text.size(), to};
  EXPECT_EQ(bind.Send(absl::Span<const OutgoingDatagram>(&d, 1)), 0u);
}

// The sources of everything `bind` received.
std::vector<Endpoint> Sources(Bind& bind) {
  std::vector<Endpoint> out;
  for (;;) {
    pollfd p{bind.readable_fd(), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return out;
    absl::StatusOr<size_t> n = bind.Receive(
        [&](absl::Span<uint8_t>, const TransportEndpoint& from) { out.push_back(from.udp()); });
    EXPECT_TRUE(n.ok());
  }
}

// One host behind the NAT; three servers outside: s1 and s1b share an address, s2 has another.
class FakeNatTest : public ::testing::Test {
 protected:
  void Build(NatMapping mapping, NatFiltering filtering, bool inbound_refresh = false) {
    nat_ = std::make_unique<FakeNat>(&lan_, &internet_, kPublic,
                                     FakeNatOptions{.mapping = mapping,
                                                    .filtering = filtering,
                                                    .mapping_timeout = std::chrono::seconds(30),
                                                    .inbound_refresh = inbound_refresh,
                                                    .seed = 42});
  }
  // The public endpoint s receives from when the host sends to it.
  Endpoint SeenBy(FakeUdpBind& server) {
    SendText(host_, server.local());
    std::vector<Endpoint> got = Sources(server);
    EXPECT_EQ(got.size(), 1u);
    return got.empty() ? Endpoint() : got[0];
  }
  // Whether a datagram from `server` to the public endpoint `to` reaches the host.
  bool Reaches(FakeUdpBind& server, const Endpoint& to) {
    SendText(server, to);
    return Sources(host_).size() == 1;
  }

  const IpAddress kPublic = *IpAddress::Parse("203.0.113.1");
  FakeClock clock_;
  FakeNetwork lan_{&clock_};
  FakeNetwork internet_{&clock_};
  FakeUdpBind host_{&lan_, Ep("10.0.0.2:41641")};
  FakeUdpBind s1_{&internet_, Ep("198.51.100.1:3478")};
  FakeUdpBind s1b_{&internet_, Ep("198.51.100.1:3479")};
  FakeUdpBind s2_{&internet_, Ep("198.51.100.2:3478")};
  std::unique_ptr<FakeNat> nat_;
};

TEST_F(FakeNatTest, EndpointIndependentMappingReusesOnePortForAllDestinations) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kEndpointIndependent);
  const Endpoint a = SeenBy(s1_), b = SeenBy(s1b_), c = SeenBy(s2_);
  EXPECT_EQ(a.address(), kPublic);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_EQ(nat_->mappings(), 1u);
  EXPECT_EQ(nat_->PublicEndpointFor(host_.local(), s2_.local()), a);
}

TEST_F(FakeNatTest, AddressDependentMappingSharesAPortPerDestinationAddress) {
  Build(NatMapping::kAddressDependent, NatFiltering::kEndpointIndependent);
  const Endpoint a = SeenBy(s1_), b = SeenBy(s1b_), c = SeenBy(s2_);
  EXPECT_EQ(a, b) << "same destination address";
  EXPECT_NE(a, c);
  EXPECT_EQ(nat_->mappings(), 2u);
}

TEST_F(FakeNatTest, AddressAndPortDependentMappingIsSymmetric) {
  Build(NatMapping::kAddressAndPortDependent, NatFiltering::kAddressAndPortDependent);
  const Endpoint a = SeenBy(s1_), b = SeenBy(s1b_), c = SeenBy(s2_);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(b, c);
  EXPECT_EQ(nat_->mappings(), 3u);
  // A STUN-learned endpoint (a) is useless to anyone else: s2 cannot reach the host through it.
  EXPECT_FALSE(Reaches(s2_, a));
  EXPECT_TRUE(Reaches(s1_, a));
}

TEST_F(FakeNatTest, EndpointIndependentFilteringAdmitsAnySource) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kEndpointIndependent);
  const Endpoint pub = SeenBy(s1_);
  EXPECT_TRUE(Reaches(s1_, pub));
  EXPECT_TRUE(Reaches(s1b_, pub));
  EXPECT_TRUE(Reaches(s2_, pub));
}

TEST_F(FakeNatTest, AddressDependentFilteringAdmitsOnlyContactedAddresses) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kAddressDependent);
  const Endpoint pub = SeenBy(s1_);
  EXPECT_TRUE(Reaches(s1_, pub));
  EXPECT_TRUE(Reaches(s1b_, pub)) << "another port of a contacted address";
  EXPECT_FALSE(Reaches(s2_, pub));
  EXPECT_EQ(nat_->stats().filtered, 1u);
  SeenBy(s2_);  // Contacting s2 opens the filter for it.
  EXPECT_TRUE(Reaches(s2_, pub));
}

TEST_F(FakeNatTest, AddressAndPortDependentFilteringAdmitsOnlyContactedEndpoints) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kAddressAndPortDependent);
  const Endpoint pub = SeenBy(s1_);
  EXPECT_TRUE(Reaches(s1_, pub));
  EXPECT_FALSE(Reaches(s1b_, pub));
  EXPECT_FALSE(Reaches(s2_, pub));
  EXPECT_EQ(nat_->stats().filtered, 2u);
}

TEST_F(FakeNatTest, InboundToAnUnmappedPortIsDropped) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kEndpointIndependent);
  EXPECT_FALSE(Reaches(s1_, Endpoint(kPublic, 5555)));
  EXPECT_EQ(nat_->stats().no_mapping, 1u);
}

TEST_F(FakeNatTest, MappingsExpireWithoutOutboundTraffic) {
  Build(NatMapping::kEndpointIndependent, NatFiltering::kEndpointIndependent);
  const Endpoint pub = SeenBy(s1_);
  clock_.Advance(std::chrono::seconds(29));
  EXPECT_TRUE(Reaches(s1_, pub));
  EXPECT_EQ(SeenBy(s1_), pub) << "outbound traffic refreshes the mapping";
  clock_.Advance(std::chrono::seconds(29));
  EXPECT_TRUE(Reaches(s1_, pub)) << "29 s after the refresh";
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_FALSE(Reaches(s1_, pub)) << "30 s without outbound traffic";
  EXPECT_EQ(nat_->mappings(), 0u);
  EXPECT_EQ(nat_->stats().mappings_expired, 1u);
}

TEST_F(FakeNatTest, InboundTrafficRefreshesOnlyWhenConfigured) {
  for (bool refresh : {false, true}) {
    Build(NatMapping::kEndpointIndependent, NatFiltering::kEndpointIndependent, refresh);
    const Endpoint pub = SeenBy(s1_);
    for (int i = 0; i < 3; ++i) {
      clock_.Advance(std::chrono::seconds(20));
      Reaches(s1_, pub);
    }
    EXPECT_EQ(nat_->mappings(), refresh ? 1u : 0u) << "inbound_refresh=" << refresh;
    nat_.reset();
  }
}

TEST_F(FakeNatTest, PortAllocationIsSeeded) {
  Build(NatMapping::kAddressAndPortDependent, NatFiltering::kEndpointIndependent);
  const Endpoint first = SeenBy(s1_), second = SeenBy(s2_);
  nat_.reset();
  Build(NatMapping::kAddressAndPortDependent, NatFiltering::kEndpointIndependent);
  EXPECT_EQ(SeenBy(s1_), first);
  EXPECT_EQ(SeenBy(s2_), second);
  EXPECT_GE(first.port(), 1024);
}

}  // namespace
}  // namespace tunnelmesh
