// Hole punching in fake time: two peers, each behind a FakeNat on its own LAN, learn their
// reflexive endpoints from a tiny reflector (STUN's role), exchange candidates (the network map's
// role) and run discovery's PathSelector with real sealed ping/pong messages through FakeUdpBinds.
// Call-me-maybe goes "through the coordinator": straight to the other selector. The relay is
// always available. Endpoint-independent NATs let them upgrade to a direct path; symmetric NATs on
// both sides keep them on the relay; a cut link falls back to the relay within the selector's
// timeout and restoring it upgrades again.
#include <cstring>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"
#include "lib/crypto/keys.h"
#include "lib/disco/message.h"
#include "lib/disco/path_selector.h"
#include "node-agent/nat/testing/fake_nat.h"
#include "node-agent/transport/testing/fake_network.h"

namespace tunnelmesh {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr Duration kStep = milliseconds(10);

void SendBytes(Bind& bind, const Endpoint& to, absl::Span<const uint8_t> bytes) {
  const OutgoingDatagram d{bytes.data(), bytes.size(), to};
  EXPECT_EQ(bind.Send(absl::Span<const OutgoingDatagram>(&d, 1)), 0u);
}

// Answers every datagram with the text of the endpoint it came from.
class Reflector {
 public:
  Reflector(FakeNetwork* network, const Endpoint& at) : bind_(network, at) {}
  const Endpoint& endpoint() const { return bind_.local(); }
  void Serve() {
    std::vector<Endpoint> sources;
    while (bind_.pending() > 0) {
      ASSERT_TRUE(bind_
                      .Receive([&](absl::Span<uint8_t>, const TransportEndpoint& from) {
                        sources.push_back(from.udp());
                      })
                      .ok());
    }
    for (const Endpoint& source : sources) {
      const std::string text = source.ToString();
      SendBytes(
          bind_, source,
          absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    }
  }

 private:
  FakeUdpBind bind_;
};

class Peer {
 public:
  Peer(FakeNetwork* lan, const char* local, uint32_t tx_seed)
      : key_(SecretKey::GeneratePrivate()),
        public_key_(DerivePublicKey(key_)),
        bind_(lan, *Endpoint::Parse(local)),
        selector_([tx_seed, n = uint64_t{0}]() mutable {
          disco::TxId id{};
          ++n;
          std::memcpy(id.data(), &tx_seed, sizeof(tx_seed));
          std::memcpy(id.data() + sizeof(tx_seed), &n, sizeof(n));
          return id;
        }) {}

  const PublicKey& public_key() const { return public_key_; }
  disco::PathSelector& selector() { return selector_; }
  const std::optional<Endpoint>& reflexive() const { return reflexive_; }
  std::vector<Endpoint> Candidates() const {
    std::vector<Endpoint> out;
    if (reflexive_) out.push_back(*reflexive_);
    out.push_back(bind_.local());
    return out;
  }

  void Meet(Peer* other, MonoTime now) {
    other_ = other;
    ASSERT_TRUE(disco::BoxKey::Derive(key_, other->public_key(), &box_));
    selector_.SetRelayAvailable(true);
    selector_.SetCandidates(other->Candidates(), now);
  }

  void AskReflector(const Endpoint& reflector) {
    const uint8_t probe[] = {'?'};
    SendBytes(bind_, reflector, probe);
  }

  // Handles everything received, as the agent's OnForeign does, then sends what the selector asks.
  void Step(MonoTime now) {
    while (bind_.pending() > 0) {
      ASSERT_TRUE(bind_
                      .Receive([&](absl::Span<uint8_t> bytes, const TransportEndpoint& from) {
                        Handle(bytes, from.udp(), now);
                      })
                      .ok());
    }
    selector_.Tick(now);
    Act(now);
  }

 private:
  void Handle(absl::Span<const uint8_t> bytes, const Endpoint& from, MonoTime now) {
    if (!disco::IsDiscoMessage(bytes)) {  // The reflector's answer.
      absl::StatusOr<Endpoint> seen = Endpoint::Parse(std::string(bytes.begin(), bytes.end()));
      if (seen.ok()) reflexive_ = *seen;
      return;
    }
    PublicKey sender;
    disco::Message message;
    if (!disco::PeekSender(bytes, &sender) || !(sender == other_->public_key()) ||
        !disco::OpenWithKey(box_, bytes, &message)) {
      ADD_FAILURE() << "a discovery message that does not open";
      return;
    }
    if (const auto* ping = std::get_if<disco::Ping>(&message)) {
      Seal(disco::Pong{ping->tx_id, from}, from);
      selector_.OnPingReceived(from, now);
    } else if (const auto* pong = std::get_if<disco::Pong>(&message)) {
      selector_.OnPong(from, pong->tx_id, now);
    }
  }

  void Act(MonoTime now) {
    disco::PathActions actions = selector_.TakeActions();
    for (const disco::PingRequest& ping : actions.pings)
      Seal(disco::Ping{ping.tx_id}, ping.endpoint);
    if (actions.send_call_me_maybe) {
      other_->selector().OnCallMeMaybe(Candidates(), now);
      other_->Act(now);
    }
  }

  void Seal(const disco::Message& message, const Endpoint& to) {
    uint8_t out[disco::kMaxDatagramSize];
    const size_t size = disco::SealWithKey(box_, public_key_, message, absl::MakeSpan(out));
    ASSERT_GT(size, 0u);
    SendBytes(bind_, to, absl::Span<const uint8_t>(out, size));
  }

  SecretKey key_;
  PublicKey public_key_;
  FakeUdpBind bind_;
  disco::PathSelector selector_;
  disco::BoxKey box_;
  Peer* other_ = nullptr;
  std::optional<Endpoint> reflexive_;
};

class HolePunchTest : public ::testing::Test {
 protected:
  void SetUp() override { InitCrypto(); }

  void Build(FakeNatOptions a_nat, FakeNatOptions b_nat) {
    a_nat.seed = 1;
    b_nat.seed = 2;
    nat_a_ = std::make_unique<FakeNat>(&lan_a_, &internet_, kNatA, a_nat);
    nat_b_ = std::make_unique<FakeNat>(&lan_b_, &internet_, kNatB, b_nat);
    a_.AskReflector(reflector_.endpoint());
    b_.AskReflector(reflector_.endpoint());
    for (int i = 0; i < 10 && !(a_.reflexive() && b_.reflexive()); ++i) Step();
    ASSERT_TRUE(a_.reflexive() && b_.reflexive());
    EXPECT_EQ(a_.reflexive()->address(), kNatA);
    a_.Meet(&b_, clock_.Now());
    b_.Meet(&a_, clock_.Now());
  }

  void Step() {
    clock_.Advance(kStep);
    internet_.DeliverDue();
    reflector_.Serve();
    a_.Step(clock_.Now());
    b_.Step(clock_.Now());
  }

  // Steps until both peers' paths are `kind`, for at most `limit` of fake time. Returns how long.
  std::optional<Duration> RunUntil(disco::PathKind kind, Duration limit) {
    const MonoTime start = clock_.Now();
    while (clock_.Now() - start <= limit) {
      if (a_.selector().CurrentPath().kind == kind && b_.selector().CurrentPath().kind == kind) {
        return clock_.Now() - start;
      }
      Step();
    }
    return std::nullopt;
  }

  const IpAddress kNatA = *IpAddress::Parse("203.0.113.1");
  const IpAddress kNatB = *IpAddress::Parse("203.0.113.2");
  FakeClock clock_;
  FakeNetwork internet_{&clock_, {.latency = milliseconds(15)}};
  FakeNetwork lan_a_{&clock_};
  FakeNetwork lan_b_{&clock_};
  Reflector reflector_{&internet_, *Endpoint::Parse("198.51.100.1:3478")};
  Peer a_{&lan_a_, "10.0.1.2:41641", 0xa};
  Peer b_{&lan_b_, "10.0.2.2:41641", 0xb};
  std::unique_ptr<FakeNat> nat_a_, nat_b_;
};

const FakeNatOptions kCone{.mapping = NatMapping::kEndpointIndependent,
                           .filtering = NatFiltering::kAddressAndPortDependent};
const FakeNatOptions kSymmetric{.mapping = NatMapping::kAddressAndPortDependent,
                                .filtering = NatFiltering::kAddressAndPortDependent};

TEST_F(HolePunchTest, EndpointIndependentNatsOnBothSidesGoDirect) {
  Build(kCone, kCone);
  EXPECT_EQ(a_.selector().CurrentPath().kind, disco::PathKind::kRelay) << "relay first";
  std::optional<Duration> took = RunUntil(disco::PathKind::kDirect, seconds(10));
  ASSERT_TRUE(took.has_value()) << "no direct path through endpoint-independent NATs";
  EXPECT_LT(*took, seconds(3));
  EXPECT_EQ(a_.selector().CurrentPath().endpoint, *b_.reflexive());
  EXPECT_EQ(b_.selector().CurrentPath().endpoint, *a_.reflexive());
  // It stays up on heartbeats alone.
  EXPECT_FALSE(RunUntil(disco::PathKind::kRelay, seconds(20)).has_value());
  EXPECT_EQ(a_.selector().stats().fallbacks, 0u);
}

TEST_F(HolePunchTest, OneFullConeSideIsEnoughAgainstASymmetricNat) {
  Build(FakeNatOptions{.mapping = NatMapping::kEndpointIndependent,
                       .filtering = NatFiltering::kEndpointIndependent},
        kSymmetric);
  // B's pings reach A's open NAT from a fresh mapping; A's pong returns through it.
  ASSERT_TRUE(RunUntil(disco::PathKind::kDirect, seconds(10)).has_value());
}

TEST_F(HolePunchTest, SymmetricNatsOnBothSidesStayOnTheRelay) {
  Build(kSymmetric, kSymmetric);
  EXPECT_FALSE(RunUntil(disco::PathKind::kDirect, seconds(60)).has_value());
  EXPECT_EQ(a_.selector().CurrentPath().kind, disco::PathKind::kRelay);
  EXPECT_EQ(b_.selector().CurrentPath().kind, disco::PathKind::kRelay);
  EXPECT_EQ(a_.selector().stats().upgrades + b_.selector().stats().upgrades, 0u);
  EXPECT_GT(a_.selector().stats().pings_requested, 0u) << "it kept trying";
  EXPECT_GT(nat_a_->stats().filtered + nat_b_->stats().filtered, 0u);
}

TEST_F(HolePunchTest, CutLinkFallsBackToRelayAndRestoringUpgradesAgain) {
  Build(kCone, kCone);
  ASSERT_TRUE(RunUntil(disco::PathKind::kDirect, seconds(10)).has_value());
  internet_.Cut(kNatA, kNatB);
  std::optional<Duration> fallback = RunUntil(disco::PathKind::kRelay, seconds(5));
  ASSERT_TRUE(fallback.has_value());
  EXPECT_LE(*fallback, disco::kPathTimeout + disco::kHeartbeatInterval + kStep);
  EXPECT_GE(a_.selector().stats().fallbacks, 1u);
  // While cut, it stays on the relay.
  EXPECT_FALSE(RunUntil(disco::PathKind::kDirect, seconds(10)).has_value());
  internet_.Restore(kNatA, kNatB);
  std::optional<Duration> upgrade = RunUntil(disco::PathKind::kDirect, seconds(40));
  ASSERT_TRUE(upgrade.has_value()) << "no re-upgrade after the link came back";
  EXPECT_LE(*upgrade, disco::kProbeIntervalMax + seconds(1));
  EXPECT_GE(a_.selector().stats().upgrades, 2u);
}

}  // namespace
}  // namespace tunnelmesh
