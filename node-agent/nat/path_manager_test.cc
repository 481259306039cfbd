#include "node-agent/nat/path_manager.h"

#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {
namespace {

// Records what the path manager asks of the data plane.
class RecordingTransport final : public PathTransport {
 public:
  struct Sent {
    std::vector<uint8_t> bytes;
    Endpoint to;
  };
  void SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) override {
    sent.push_back({std::vector<uint8_t>(bytes.begin(), bytes.end()), to});
  }
  void UseDirect(const PublicKey&, const Endpoint& endpoint) override {
    direct.push_back(endpoint);
  }
  void UseRelay(const PublicKey&) override { ++relay; }
  void SuggestEndpoint(const PublicKey&, const Endpoint& endpoint) override {
    suggested.push_back(endpoint);
  }
  void UseSsh(const PublicKey&) override { ++ssh; }
  void SendSshDatagram(absl::Span<const uint8_t> bytes, const PublicKey& peer) override {
    ssh_sent.push_back({std::vector<uint8_t>(bytes.begin(), bytes.end()), Endpoint()});
  }
  void ConnectSsh(const PublicKey&) override { ++ssh_connects; }
  bool SshConnected(const PublicKey&) const override { return ssh_connected; }
  std::vector<Sent> sent;
  std::vector<Sent> ssh_sent;
  int ssh = 0;
  int ssh_connects = 0;
  bool ssh_connected = false;
  std::vector<Endpoint> direct;
  std::vector<Endpoint> suggested;
  int relay = 0;
};

struct Member {
  SecretKey secret = SecretKey::GeneratePrivate();
  PublicKey key = DerivePublicKey(secret);
};

Endpoint E(const char* text) { return *Endpoint::Parse(text); }

class PathManagerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }

  PathManagerTest()
      : manager_(us_.secret, us_.key, &transport_, [this] {
          disco::TxId id{};
          id[0] = static_cast<uint8_t>(++next_tx_);
          return id;
        }) {}

  // What `peer_` reads from a datagram we sent.
  std::optional<disco::Message> OpenAsPeer(const std::vector<uint8_t>& bytes) {
    PublicKey sender;
    disco::Message message;
    if (!disco::Open(peer_.secret, bytes, &sender, &message) || !(sender == us_.key)) {
      return std::nullopt;
    }
    return message;
  }
  std::vector<uint8_t> SealFromPeer(const disco::Message& message) {
    std::vector<uint8_t> out(disco::kMaxDatagramSize);
    out.resize(disco::Seal(peer_.secret, peer_.key, us_.key, message, absl::MakeSpan(out)));
    return out;
  }
  // The pings sent so far to `to`, as the peer opens them.
  std::vector<disco::Ping> PingsTo(const Endpoint& to) {
    std::vector<disco::Ping> pings;
    for (const auto& sent : transport_.sent) {
      std::optional<disco::Message> m = OpenAsPeer(sent.bytes);
      if (sent.to == to && m && std::holds_alternative<disco::Ping>(*m)) {
        pings.push_back(std::get<disco::Ping>(*m));
      }
    }
    return pings;
  }

  Member us_, peer_;
  FakeClock clock_;
  RecordingTransport transport_;
  int next_tx_ = 0;
  PathManager manager_;
};

TEST_F(PathManagerTest, PingIsAnsweredWithPong) {
  manager_.UpsertPeer(peer_.key, "beta", {}, clock_.Now());
  transport_.sent.clear();
  disco::TxId tx{};
  tx[3] = 0x42;
  const Endpoint from = E("203.0.113.9:40000");
  manager_.OnDiscoDatagram(SealFromPeer(disco::Ping{tx}), from, clock_.Now());
  ASSERT_FALSE(transport_.sent.empty());
  EXPECT_EQ(transport_.sent[0].to, from);
  std::optional<disco::Message> reply = OpenAsPeer(transport_.sent[0].bytes);
  ASSERT_TRUE(reply.has_value());
  ASSERT_TRUE(std::holds_alternative<disco::Pong>(*reply));
  EXPECT_EQ(std::get<disco::Pong>(*reply).tx_id, tx);
  EXPECT_EQ(std::get<disco::Pong>(*reply).observed, from);
}

TEST_F(PathManagerTest, PongConfirmsADirectPath) {
  const Endpoint candidate = E("192.0.2.10:51820");
  manager_.SetRelayAvailable(true);
  manager_.UpsertPeer(peer_.key, "beta", {candidate}, clock_.Now());
  EXPECT_TRUE(transport_.suggested.empty()) << "the relay carries traffic until a pong";
  std::vector<disco::Ping> pings = PingsTo(candidate);
  ASSERT_EQ(pings.size(), 1u);
  // Relay first while nothing is confirmed.
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kRelay);
  EXPECT_EQ(transport_.relay, 1);

  clock_.Advance(std::chrono::milliseconds(20));
  manager_.OnDiscoDatagram(SealFromPeer(disco::Pong{pings[0].tx_id, E("198.51.100.1:51820")}),
                           candidate, clock_.Now());
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kDirect);
  EXPECT_EQ(transport_.direct, std::vector<Endpoint>{candidate});
  EXPECT_EQ(manager_.PathCounts(), (PathManager::Counts{1, 0, 0}));
  EXPECT_EQ(
      manager_.Paths(),
      (std::vector<std::pair<PublicKey, disco::PathKind>>{{peer_.key, disco::PathKind::kDirect}}));
  // The round trip of the ping that proved the path, and one change (relay -> direct).
  const PathStats stats = manager_.StatsOf(peer_.key);
  EXPECT_EQ(stats.path.kind, disco::PathKind::kDirect);
  ASSERT_TRUE(stats.rtt.has_value());
  EXPECT_EQ(*stats.rtt, std::chrono::milliseconds(20));
  EXPECT_EQ(stats.changes, 1u);
  EXPECT_EQ(manager_.StatsOf(us_.key).path.kind, disco::PathKind::kNone);  // Unknown peer.
}

TEST_F(PathManagerTest, ForgedOrUnknownPongsConfirmNothing) {
  const Endpoint candidate = E("192.0.2.10:51820");
  manager_.UpsertPeer(peer_.key, "beta", {candidate}, clock_.Now());
  disco::TxId wrong{};
  wrong[0] = 0xee;
  manager_.OnDiscoDatagram(SealFromPeer(disco::Pong{wrong, candidate}), candidate, clock_.Now());
  EXPECT_NE(manager_.PathOf(peer_.key).kind, disco::PathKind::kDirect);
  // From someone not in the map.
  Member stranger;
  std::vector<uint8_t> out(disco::kMaxDatagramSize);
  out.resize(
      disco::Seal(stranger.secret, stranger.key, us_.key, disco::Ping{wrong}, absl::MakeSpan(out)));
  manager_.OnDiscoDatagram(out, candidate, clock_.Now());
  EXPECT_EQ(manager_.drops().unknown_peer, 1u);
  // Tampered.
  std::vector<uint8_t> bad = SealFromPeer(disco::Ping{wrong});
  bad.back() ^= 1;
  manager_.OnDiscoDatagram(bad, candidate, clock_.Now());
  EXPECT_EQ(manager_.drops().bad_seal, 1u);
}

TEST_F(PathManagerTest, SilenceFallsBackToTheRelay) {
  const Endpoint candidate = E("192.0.2.10:51820");
  manager_.SetRelayAvailable(true);
  manager_.UpsertPeer(peer_.key, "beta", {candidate}, clock_.Now());
  std::vector<disco::Ping> pings = PingsTo(candidate);
  ASSERT_FALSE(pings.empty());
  manager_.OnDiscoDatagram(SealFromPeer(disco::Pong{pings[0].tx_id, candidate}), candidate,
                           clock_.Now());
  ASSERT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kDirect);
  const int relay_before = transport_.relay;
  // No pong and no traffic: heartbeats go out, then the path is declared dead.
  for (int i = 0; i < 30; ++i) {
    clock_.Advance(std::chrono::milliseconds(50));
    manager_.Tick(clock_.Now());
  }
  EXPECT_GT(PingsTo(candidate).size(), pings.size()) << "heartbeats were sent";
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kRelay);
  EXPECT_EQ(transport_.relay, relay_before + 1);
  EXPECT_EQ(manager_.PathCounts(), (PathManager::Counts{0, 1, 0}));
  EXPECT_EQ(
      manager_.Paths(),
      (std::vector<std::pair<PublicKey, disco::PathKind>>{{peer_.key, disco::PathKind::kRelay}}));
  // relay -> direct -> relay; no RTT on the relay path.
  EXPECT_EQ(manager_.StatsOf(peer_.key).changes, 2u);
  EXPECT_FALSE(manager_.StatsOf(peer_.key).rtt.has_value());
}

TEST_F(PathManagerTest, ProbeRoundsQueueOneCallMeMaybe) {
  manager_.UpsertPeer(peer_.key, "beta", {E("192.0.2.10:51820")}, clock_.Now());
  // Without a relay, the first candidate is tried directly until a path is confirmed.
  EXPECT_EQ(transport_.suggested, std::vector<Endpoint>{E("192.0.2.10:51820")});
  std::vector<PublicKey> queued = manager_.TakeCallMeMaybe();
  EXPECT_EQ(queued, std::vector<PublicKey>{peer_.key});
  EXPECT_TRUE(manager_.TakeCallMeMaybe().empty()) << "taken once";
  // A call-me-maybe from the peer (through the coordinator) probes its endpoints at once, without
  // asking back.
  const Endpoint offered = E("203.0.113.5:41000");
  manager_.OnCallMeMaybe(peer_.key, std::vector<Endpoint>{offered}, clock_.Now());
  EXPECT_EQ(PingsTo(offered).size(), 1u);
  EXPECT_TRUE(manager_.TakeCallMeMaybe().empty());
  // A removed peer is forgotten.
  manager_.RemovePeer(peer_.key);
  EXPECT_FALSE(manager_.HasPeer(peer_.key));
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kNone);
}

TEST_F(PathManagerTest, SshCarriesTrafficWhenItsPongsComeBack) {
  const Endpoint kTcp = E("192.0.2.10:40222");  // The SSH connection's remote end.
  const Endpoint candidate = E("192.0.2.10:51820");
  manager_.SetRelayAvailable(true);
  manager_.UpsertPeer(peer_.key, "beta", {candidate}, clock_.Now());
  ASSERT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kRelay);
  manager_.SetSshOffered(peer_.key, true, clock_.Now());
  EXPECT_GE(transport_.ssh_connects, 1) << "no direct path: SSH is dialed";
  EXPECT_TRUE(transport_.ssh_sent.empty()) << "nothing over SSH before it connects";

  transport_.ssh_connected = true;
  clock_.Advance(std::chrono::milliseconds(10));
  manager_.Tick(clock_.Now());
  ASSERT_EQ(transport_.ssh_sent.size(), 1u);
  std::optional<disco::Message> ping = OpenAsPeer(transport_.ssh_sent[0].bytes);
  ASSERT_TRUE(ping && std::holds_alternative<disco::Ping>(*ping));
  const disco::TxId tx = std::get<disco::Ping>(*ping).tx_id;

  // A pong sealed by the peer but arriving on another member's connection proves nothing.
  Member other;
  manager_.OnSshDiscoDatagram(other.key, kTcp, SealFromPeer(disco::Pong{tx, kTcp}), clock_.Now());
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kRelay);
  EXPECT_EQ(manager_.drops().unknown_peer, 1u);

  clock_.Advance(std::chrono::milliseconds(3));
  manager_.OnSshDiscoDatagram(peer_.key, kTcp, SealFromPeer(disco::Pong{tx, kTcp}), clock_.Now());
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kSsh);
  EXPECT_EQ(transport_.ssh, 1);
  EXPECT_EQ(manager_.PathCounts(), (PathManager::Counts{0, 0, 1}));
  EXPECT_EQ(manager_.StatsOf(peer_.key).rtt, std::chrono::milliseconds(3));

  // A ping over SSH is answered over SSH.
  transport_.ssh_sent.clear();
  disco::TxId theirs{};
  theirs[0] = 0x77;
  manager_.OnSshDiscoDatagram(peer_.key, kTcp, SealFromPeer(disco::Ping{theirs}), clock_.Now());
  ASSERT_EQ(transport_.ssh_sent.size(), 1u);
  std::optional<disco::Message> pong = OpenAsPeer(transport_.ssh_sent[0].bytes);
  ASSERT_TRUE(pong && std::holds_alternative<disco::Pong>(*pong));
  EXPECT_EQ(std::get<disco::Pong>(*pong).tx_id, theirs);
  EXPECT_EQ(std::get<disco::Pong>(*pong).observed, kTcp);

  // The connection drops: back to the relay at once.
  transport_.ssh_connected = false;
  manager_.Tick(clock_.Now());
  EXPECT_EQ(manager_.PathOf(peer_.key).kind, disco::PathKind::kRelay);
  EXPECT_EQ(manager_.PathCounts(), (PathManager::Counts{0, 1, 0}));
}

}  // namespace
}  // namespace tunnelmesh
