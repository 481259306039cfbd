#include "lib/noise/device.h"

#include <deque>
#include <vector>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"

namespace tunnelmesh::noise {
namespace {

using Datagram = std::vector<uint8_t>;

struct Wire {
  TransportEndpoint from, to;
  Datagram bytes;
};

std::vector<uint8_t> Ipv4Packet(size_t length, uint8_t fill) {
  std::vector<uint8_t> p(length, fill);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(length >> 8);
  p[3] = static_cast<uint8_t>(length);
  return p;
}

// Two devices joined by an in-memory network that the test steps explicitly.
class DevicePairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    SecretKey a_key = SecretKey::GeneratePrivate(), b_key = SecretKey::GeneratePrivate();
    a_ = std::make_unique<Device>(a_key, 1420);
    b_ = std::make_unique<Device>(b_key, 1420, b_load_threshold_);
    a_addr_ = Endpoint(*IpAddress::Parse("192.0.2.1"), 1001);
    b_addr_ = Endpoint(*IpAddress::Parse("192.0.2.2"), 1002);
    SecretKey psk = SecretKey::Random();
    a_peer_ =
        *a_->AddPeer({b_->identity().public_key, psk.Clone(), b_addr_, std::chrono::seconds(0)});
    b_peer_ = *b_->AddPeer(
        {a_->identity().public_key, psk.Clone(), std::nullopt, std::chrono::seconds(0)});
  }

  auto EmitFrom(const TransportEndpoint& self) {
    return [this, self](const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
      in_flight_.push_back(Wire{self, to, Datagram(bytes.begin(), bytes.end())});
    };
  }

  // Sends an IP packet from A's TUN side. Returns what SealInPlace said.
  Device::SealResult SendFromA(const std::vector<uint8_t>& packet) {
    return Send(*a_, a_peer_, a_addr_, packet);
  }
  Device::SealResult SendFromB(const std::vector<uint8_t>& packet) {
    return Send(*b_, b_peer_, b_addr_, packet);
  }

  Device::SealResult Send(Device& d, Peer* peer, const TransportEndpoint& self,
                          const std::vector<uint8_t>& packet) {
    std::vector<uint8_t> buffer(16 + packet.size() + Device::kSealTailroom);
    std::copy(packet.begin(), packet.end(), buffer.begin() + 16);
    size_t length = 0;
    TransportEndpoint to;
    auto result = d.SealInPlace(peer, buffer.data(), packet.size(), clock_.Now(), clock_.WallNow(),
                                EmitFrom(self), &length, &to);
    if (result == Device::SealResult::kSealed) {
      in_flight_.push_back(Wire{self, to, Datagram(buffer.begin(), buffer.begin() + length)});
    }
    return result;
  }

  // Delivers one datagram; decrypted packets are collected per receiving device.
  void Deliver(const Wire& w) {
    Device& d = w.to == a_addr_ ? *a_ : *b_;
    auto& sink = w.to == a_addr_ ? a_received_ : b_received_;
    Datagram copy = w.bytes;
    auto r = d.Receive(absl::Span<uint8_t>(copy), w.from, clock_.Now(), clock_.WallNow(),
                       EmitFrom(w.to));
    if (r.kind == Device::Received::Kind::kPacket) {
      sink.emplace_back(copy.begin() + 16, copy.begin() + 16 + r.packet_length);
    }
  }

  // Delivers everything in flight until the network is quiet; returns how many were delivered.
  int Pump() {
    int n = 0;
    while (!in_flight_.empty()) {
      Wire w = std::move(in_flight_.front());
      in_flight_.pop_front();
      log_.push_back(w);
      Deliver(w);
      ++n;
    }
    return n;
  }

  void Tick() {
    a_->Tick(clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
    b_->Tick(clock_.Now(), clock_.WallNow(), EmitFrom(b_addr_));
  }

  int CountLogged(uint8_t type) const {
    int n = 0;
    for (const auto& w : log_) n += w.bytes[0] == type;
    return n;
  }

  void Establish() {
    ASSERT_EQ(SendFromA(Ipv4Packet(100, 1)), Device::SealResult::kStaged);
    Pump();
    ASSERT_EQ(b_received_.size(), 1u);
    b_received_.clear();
  }

  uint32_t b_load_threshold_ = 1000;
  FakeClock clock_;
  std::unique_ptr<Device> a_, b_;
  Endpoint a_addr_, b_addr_;
  Peer* a_peer_ = nullptr;
  Peer* b_peer_ = nullptr;
  std::deque<Wire> in_flight_;
  std::vector<Wire> log_;
  std::vector<Datagram> a_received_, b_received_;
};

TEST_F(DevicePairTest, HandshakeThenDataBothWays) {
  auto packet = Ipv4Packet(100, 7);
  EXPECT_EQ(SendFromA(packet), Device::SealResult::kStaged);
  Pump();
  // Initiation, response, then the staged packet.
  EXPECT_EQ(CountLogged(1), 1);
  EXPECT_EQ(CountLogged(2), 1);
  ASSERT_EQ(b_received_.size(), 1u);
  EXPECT_EQ(b_received_[0], packet);
  // B learned A's endpoint from the handshake and can answer at once on the confirmed session.
  EXPECT_EQ(b_peer_->endpoint(), a_addr_);
  auto reply = Ipv4Packet(1400, 9);
  EXPECT_EQ(SendFromB(reply), Device::SealResult::kSealed);
  Pump();
  ASSERT_EQ(a_received_.size(), 1u);
  EXPECT_EQ(a_received_[0], reply);
  EXPECT_EQ(a_peer_->stats().handshakes_completed.load(), 1u);
  EXPECT_EQ(b_peer_->stats().handshakes_completed.load(), 1u);
  EXPECT_GT(a_peer_->stats().tx_bytes.load(), 100u);
  EXPECT_EQ(a_peer_->stats().rx_packets.load(), 1u);
}

// A preshared-key rollover on live sessions (docs/protocol.md, "Preshared key"): A initiates, B
// responds; each new handshake is made after the keys changed.
class DeviceRolloverTest : public DevicePairTest {
 protected:
  void SetKeys(Device& d, Peer* peer, const SecretKey& primary, const SecretKey* secondary) {
    PresharedKeys keys{primary.Clone(), std::nullopt};
    if (secondary != nullptr) keys.secondary = secondary->Clone();
    ASSERT_TRUE(d.SetPresharedKeys(peer->public_key(), std::move(keys)));
  }
  // A starts a new handshake (past REKEY_TIMEOUT since the last one); true when it completed.
  bool Rehandshake() {
    clock_.Advance(std::chrono::seconds(6));
    const uint64_t before = a_peer_->stats().handshakes_completed.load();
    a_->Initiate(a_peer_, clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
    Pump();
    return a_peer_->stats().handshakes_completed.load() == before + 1;
  }
  // Data still flows both ways.
  void ExpectTraffic() {
    a_received_.clear();
    b_received_.clear();
    ASSERT_EQ(SendFromA(Ipv4Packet(60, 1)), Device::SealResult::kSealed);
    ASSERT_EQ(SendFromB(Ipv4Packet(60, 2)), Device::SealResult::kSealed);
    Pump();
    EXPECT_EQ(a_received_.size(), 1u);
    EXPECT_EQ(b_received_.size(), 1u);
  }

  SecretKey old_ = SecretKey::Random(), new_ = SecretKey::Random();
};

TEST_F(DeviceRolloverTest, EveryPairOfAdjacentStepsHandshakes) {
  // Steps: before (old), a (use old, accept new), b (use new, accept old), c (new).
  struct Step {
    const SecretKey* primary;
    const SecretKey* secondary;
  };
  const Step steps[] = {{&old_, nullptr}, {&old_, &new_}, {&new_, &old_}, {&new_, nullptr}};
  SetKeys(*a_, a_peer_, old_, nullptr);
  SetKeys(*b_, b_peer_, old_, nullptr);
  Establish();
  for (size_t i = 0; i + 1 < std::size(steps); ++i) {
    for (const bool initiator_ahead : {false, true}) {
      const Step& a_step = initiator_ahead ? steps[i + 1] : steps[i];
      const Step& b_step = initiator_ahead ? steps[i] : steps[i + 1];
      SetKeys(*a_, a_peer_, *a_step.primary, a_step.secondary);
      SetKeys(*b_, b_peer_, *b_step.primary, b_step.secondary);
      EXPECT_TRUE(Rehandshake()) << "steps " << i << " and " << i + 1
                                 << (initiator_ahead ? ", initiator ahead" : ", responder ahead");
      ExpectTraffic();
    }
  }
  EXPECT_EQ(a_->drops().Get(Drop::kHandshakeInvalid), 0u);
  // a/before: B answered with old, A's primary. b/a (responder ahead): B answered with new, A's
  // secondary; a/b (initiator ahead): B answered with old, A's secondary. c/b: new, A's primary.
  EXPECT_EQ(a_->outcomes().Get(Outcome::kSecondaryPresharedKey), 2u);
}

TEST_F(DeviceRolloverTest, ResponderUsesItsPrimaryAndAThirdKeyFails) {
  SetKeys(*a_, a_peer_, old_, nullptr);
  SetKeys(*b_, b_peer_, old_, nullptr);
  Establish();
  // B would accept new, but answers with old, its primary: A, which knows only new, refuses.
  SetKeys(*b_, b_peer_, old_, &new_);
  SetKeys(*a_, a_peer_, new_, nullptr);
  EXPECT_FALSE(Rehandshake());
  EXPECT_EQ(a_->drops().Get(Drop::kHandshakeInvalid), 1u);
  // A third key on B's side opens with neither of A's.
  SetKeys(*a_, a_peer_, old_, &new_);
  const SecretKey third = SecretKey::Random();
  SetKeys(*b_, b_peer_, third, nullptr);
  EXPECT_FALSE(Rehandshake());
  EXPECT_EQ(a_->drops().Get(Drop::kHandshakeInvalid), 2u);
  // Counted against the peer too, for `status`'s "preshared key mismatch?".
  EXPECT_EQ(a_peer_->stats().handshake_responses_rejected.load(), 2u);
  // The established session is untouched by the failed handshakes.
  ExpectTraffic();
}

TEST_F(DevicePairTest, UnknownPeerPresharedKeysAreNotSet) {
  EXPECT_FALSE(a_->SetPresharedKeys(a_->identity().public_key, PresharedKeys{}));
}

TEST_F(DevicePairTest, ResponderStagesUntilConfirmedWhenInitiatorSendsNothing) {
  // A initiates through a tick (persistent-keepalive style), B answers; A confirms with a
  // keepalive.
  a_->Initiate(a_peer_, clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
  Pump();
  EXPECT_EQ(CountLogged(4), 1) << "the initiator confirms the session with a keepalive";
  EXPECT_EQ(SendFromB(Ipv4Packet(60, 1)), Device::SealResult::kSealed);
}

TEST_F(DevicePairTest, ReplayedInitiationIsRejected) {
  Establish();
  Wire initiation;
  for (const auto& w : log_)
    if (w.bytes[0] == 1) initiation = w;
  clock_.Advance(std::chrono::seconds(1));
  Deliver(initiation);
  EXPECT_EQ(b_->drops().Get(Drop::kHandshakeReplayed), 1u);
  EXPECT_TRUE(in_flight_.empty()) << "no response to a replay";
}

TEST_F(DevicePairTest, ReplayedAndReorderedCounters) {
  Establish();
  log_.clear();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(SendFromA(Ipv4Packet(80, i)), Device::SealResult::kSealed);
  std::vector<Wire> sent(in_flight_.begin(), in_flight_.end());
  in_flight_.clear();
  Deliver(sent[2]);
  Deliver(sent[0]);
  Deliver(sent[1]);
  EXPECT_EQ(b_received_.size(), 3u) << "reordered packets inside the window are accepted";
  Deliver(sent[1]);
  EXPECT_EQ(b_received_.size(), 3u);
  EXPECT_EQ(b_->drops().Get(Drop::kReplayed), 1u);
}

TEST_F(DevicePairTest, TamperedAndTruncatedPacketsAreCountedAndDropped) {
  Establish();
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kSealed);
  Wire w = in_flight_.back();
  in_flight_.clear();
  Wire tampered = w;
  tampered.bytes[40] ^= 0x80;
  Deliver(tampered);
  EXPECT_EQ(b_->drops().Get(Drop::kDecryptFailed), 1u);
  Wire truncated = w;
  truncated.bytes.resize(20);
  Deliver(truncated);
  EXPECT_EQ(b_->drops().Get(Drop::kMalformed), 1u);
  Wire unknown = w;
  unknown.bytes[4] ^= 0xff;
  Deliver(unknown);
  EXPECT_EQ(b_->drops().Get(Drop::kUnknownReceiver), 1u);
  // The genuine packet still decrypts: a failed tag does not advance the window.
  Deliver(w);
  EXPECT_EQ(b_received_.size(), 1u);
}

TEST_F(DevicePairTest, InitiatorRekeysAfterRekeyAfterTime) {
  Establish();
  log_.clear();
  clock_.Advance(std::chrono::seconds(121));
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kSealed)
      << "the old session still sends";
  Pump();
  EXPECT_EQ(CountLogged(1), 1) << "and a new handshake starts";
  EXPECT_EQ(a_peer_->stats().handshakes_completed.load(), 2u);
}

TEST_F(DevicePairTest, SessionsExpireAfterRejectAfterTime) {
  Establish();
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kSealed);
  Wire old = in_flight_.back();
  in_flight_.clear();
  clock_.Advance(std::chrono::seconds(181));
  Deliver(old);
  EXPECT_EQ(b_->drops().Get(Drop::kKeypairExpired), 1u);
  EXPECT_EQ(SendFromB(Ipv4Packet(80, 3)), Device::SealResult::kStaged)
      << "no sending on a dead session";
}

TEST_F(DevicePairTest, RetriesEveryRekeyTimeoutAndGivesUpAfterRekeyAttemptTime) {
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kStaged);
  int initiations = 0;
  for (int ms = 0; ms <= 100'000; ms += 100) {
    initiations += static_cast<int>(in_flight_.size());
    in_flight_.clear();  // B never answers.
    clock_.Advance(std::chrono::milliseconds(100));
    a_->Tick(clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
  }
  // One every 5 to 5.333 s for 90 s.
  EXPECT_GE(initiations, 17);
  EXPECT_LE(initiations, 19);
  EXPECT_EQ(a_->drops().Get(Drop::kHandshakeTimeout), 1u);
}

TEST_F(DevicePairTest, KeepaliveAfterTenSecondsOfSilence) {
  Establish();
  log_.clear();
  clock_.Advance(std::chrono::seconds(9));
  Tick();
  EXPECT_TRUE(in_flight_.empty());
  clock_.Advance(std::chrono::seconds(2));
  Tick();
  ASSERT_EQ(in_flight_.size(), 1u);
  EXPECT_EQ(in_flight_.front().from, b_addr_) << "the receiver of data answers with a keepalive";
  EXPECT_EQ(in_flight_.front().bytes.size(), 32u);
}

TEST_F(DevicePairTest, NewHandshakeWhenDataGoesUnanswered) {
  Establish();
  log_.clear();
  clock_.Advance(std::chrono::seconds(1));
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kSealed);
  in_flight_.clear();  // Lost, and B never answers.
  clock_.Advance(std::chrono::seconds(16));
  a_->Tick(clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
  ASSERT_FALSE(in_flight_.empty());
  EXPECT_EQ(in_flight_.back().bytes[0], 1);
}

TEST_F(DevicePairTest, RoamsToLatestAuthenticatedSource) {
  Establish();
  Endpoint moved(*IpAddress::Parse("198.51.100.9"), 4444);
  ASSERT_EQ(SendFromB(Ipv4Packet(80, 3)), Device::SealResult::kSealed);
  Wire w = in_flight_.back();
  in_flight_.clear();
  w.from = moved;
  Deliver(w);
  EXPECT_EQ(a_peer_->endpoint(), moved);
  // A forged (unauthenticated) datagram from elsewhere does not move it.
  Wire forged = w;
  forged.from = Endpoint(*IpAddress::Parse("203.0.113.1"), 1);
  forged.bytes[30] ^= 1;
  Deliver(forged);
  EXPECT_EQ(a_peer_->endpoint(), moved);
}

TEST_F(DevicePairTest, RelayEndpointIsStoredEmittedAndRoamedTo) {
  // A reaches B through the relay: every message A emits is addressed to the relay endpoint.
  const TransportEndpoint relay_b = TransportEndpoint::Relay(7);
  a_peer_->set_endpoint(relay_b);
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kStaged);
  ASSERT_EQ(in_flight_.size(), 1u);
  EXPECT_EQ(in_flight_[0].to, relay_b);
  EXPECT_EQ(in_flight_[0].to.ToString(), "relay");
  // B sees A's initiation arrive from the relay (as peer 3) and answers there.
  const TransportEndpoint relay_a = TransportEndpoint::Relay(3);
  Wire initiation = in_flight_[0];
  in_flight_.clear();
  initiation.from = relay_a;
  initiation.to = b_addr_;
  Deliver(initiation);
  ASSERT_EQ(in_flight_.size(), 1u);
  EXPECT_EQ(in_flight_[0].to, relay_a);
  EXPECT_EQ(b_peer_->endpoint(), relay_a);
  EXPECT_FALSE(relay_a == TransportEndpoint(Endpoint(IpAddress(), 0)));
  EXPECT_FALSE(relay_a == relay_b);
}

TEST_F(DevicePairTest, PersistentKeepaliveStartsHandshakeAndKeepsSending) {
  SecretKey c_key = SecretKey::GeneratePrivate();
  Device c(c_key, 1420);
  Peer* peer =
      *c.AddPeer({a_->identity().public_key, SecretKey(), a_addr_, std::chrono::seconds(25)});
  std::vector<Datagram> out;
  auto emit = [&](const TransportEndpoint&, absl::Span<const uint8_t> b) {
    out.emplace_back(b.begin(), b.end());
  };
  c.Tick(clock_.Now(), clock_.WallNow(), emit);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0][0], 1) << "a keepalive without a session starts a handshake";
  EXPECT_EQ(peer->stats().handshakes_initiated.load(), 1u);
}

TEST_F(DevicePairTest, RemovedPeerLosesSessionsAndIsRefused) {
  Establish();
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kSealed);
  Wire data = in_flight_.back();
  in_flight_.clear();
  b_->RemovePeer(a_->identity().public_key, clock_.Now());
  EXPECT_EQ(b_->FindPeer(a_->identity().public_key), nullptr);
  Deliver(data);
  EXPECT_EQ(b_->drops().Get(Drop::kUnknownReceiver), 1u) << "its sessions are gone";
  clock_.Advance(std::chrono::seconds(6));
  a_->Initiate(a_peer_, clock_.Now(), clock_.WallNow(), EmitFrom(a_addr_));
  Pump();
  EXPECT_EQ(b_->drops().Get(Drop::kUnknownPeer), 1u) << "a new handshake is refused";
  clock_.Advance(Device::kRetireAfter);
  Tick();  // Frees the retired peer; nothing may touch it afterwards.
}

TEST_F(DevicePairTest, TrafficFromUnknownStaticKeyIsRefused) {
  SecretKey stranger_key = SecretKey::GeneratePrivate();
  Device stranger(stranger_key, 1420);
  Peer* p =
      *stranger.AddPeer({b_->identity().public_key, SecretKey(), b_addr_, std::chrono::seconds(0)});
  Endpoint s_addr(*IpAddress::Parse("192.0.2.99"), 9);
  stranger.Initiate(p, clock_.Now(), clock_.WallNow(), EmitFrom(s_addr));
  Pump();
  EXPECT_EQ(b_->drops().Get(Drop::kUnknownPeer), 1u);
}

class UnderLoadTest : public DevicePairTest {
 protected:
  UnderLoadTest() { b_load_threshold_ = 0; }
};

TEST_F(UnderLoadTest, CookieReplyThenMac2Accepted) {
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kStaged);
  Pump();
  EXPECT_EQ(CountLogged(3), 1) << "under load B answers with a cookie reply";
  EXPECT_EQ(b_->outcomes().Get(Outcome::kCookieSent), 1u);
  EXPECT_TRUE(b_received_.empty());
  // The retransmit carries mac2 from the cookie and is accepted despite the load.
  clock_.Advance(std::chrono::milliseconds(5400));
  Tick();
  Pump();
  ASSERT_EQ(b_received_.size(), 1u);
  EXPECT_EQ(b_->outcomes().Get(Outcome::kCookieSent), 1u);
}

TEST_F(UnderLoadTest, BadMac1IsDroppedBeforeAnyWork) {
  ASSERT_EQ(SendFromA(Ipv4Packet(80, 3)), Device::SealResult::kStaged);
  Wire w = in_flight_.front();
  in_flight_.clear();
  w.bytes[120] ^= 1;  // Inside mac1.
  Deliver(w);
  EXPECT_EQ(b_->drops().Get(Drop::kMac1Invalid), 1u);
  EXPECT_TRUE(in_flight_.empty());
}

}  // namespace
}  // namespace tunnelmesh::noise
