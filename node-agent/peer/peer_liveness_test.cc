#include "node-agent/peer/peer_liveness.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

PublicKey Key(uint8_t b) {
  PublicKey key;
  key.bytes.fill(b);
  return key;
}

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

TEST(PeerLivenessTest, AnUnknownPeerIsOfflineAndNeverSeen) {
  PeerLiveness liveness;
  PeerLivenessView view = liveness.View(Key(1), kStart);
  EXPECT_FALSE(view.online);
  EXPECT_EQ(view.last_seen, absl::InfinitePast());
  EXPECT_TRUE(view.warnings.empty());
}

TEST(PeerLivenessTest, PacketsKeepAPeerOnlineForTheWindow) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.Sample(k, {}, kStart);
  EXPECT_FALSE(liveness.View(k, kStart).online) << "no packet yet";
  liveness.Sample(k, {.rx_packets = 3}, kStart + absl::Seconds(1));
  EXPECT_TRUE(liveness.View(k, kStart + absl::Seconds(2)).online);
  // The same count later is no new evidence.
  liveness.Sample(k, {.rx_packets = 3}, kStart + absl::Seconds(20));
  EXPECT_TRUE(liveness.View(k, kStart + absl::Seconds(31)).online);
  PeerLivenessView gone = liveness.View(k, kStart + absl::Seconds(32));
  EXPECT_FALSE(gone.online);
  EXPECT_EQ(gone.last_seen, kStart + absl::Seconds(1));
}

TEST(PeerLivenessTest, ADirectPathIsEvidence) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.Sample(k, {.direct_path = true}, kStart);
  EXPECT_TRUE(liveness.View(k, kStart + absl::Seconds(3)).online);
  EXPECT_FALSE(liveness.View(k, kStart + absl::Seconds(4)).online) << "no sample on it since";
}

TEST(PeerLivenessTest, TheCoordinatorsViewCountsUntilItSaysOffline) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.SetPresence(k, true, kStart, kStart);
  EXPECT_TRUE(liveness.View(k, kStart + absl::Hours(1)).online) << "idle, but connected";
  liveness.SetPresence(k, false, kStart + absl::Hours(1), kStart + absl::Hours(1));
  PeerLivenessView view = liveness.View(k, kStart + absl::Hours(1) + absl::Seconds(1));
  EXPECT_FALSE(view.online);
  EXPECT_EQ(view.last_seen, kStart + absl::Hours(1));
  // Its own packets still count, coordinator or not.
  liveness.Sample(k, {.rx_packets = 1}, kStart + absl::Hours(2));
  EXPECT_TRUE(liveness.View(k, kStart + absl::Hours(2)).online);
  liveness.Forget(k);
  EXPECT_FALSE(liveness.View(k, kStart + absl::Hours(2)).online);
}

TEST(PeerLivenessTest, TheCoordinatorSayingOfflineOutweighsEarlierPackets) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.SetPresence(k, true, kStart, kStart);
  liveness.Sample(k, {.rx_packets = 5, .direct_path = true}, kStart + absl::Seconds(10));
  // Its agent stopped: the coordinator says so a moment later.
  liveness.SetPresence(k, false, kStart + absl::Seconds(10), kStart + absl::Seconds(11));
  PeerLivenessView view = liveness.View(k, kStart + absl::Seconds(11));
  EXPECT_FALSE(view.online);
  EXPECT_EQ(view.last_seen, kStart + absl::Seconds(10));
  // Packets after that mean it is there after all (only its coordinator connection broke).
  liveness.Sample(k, {.rx_packets = 6}, kStart + absl::Seconds(12));
  EXPECT_TRUE(liveness.View(k, kStart + absl::Seconds(13)).online);
}

// A stopped peer's direct path stays "direct" for up to a second after the coordinator says
// offline (until pongs are missed): a sample in that time does not bring the peer back. A direct
// path that lasts longer does (the peer answers; only its coordinator connection broke).
TEST(PeerLivenessTest, ADirectPathRightAfterTheCoordinatorSaysOfflineIsNoEvidence) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.SetPresence(k, true, kStart, kStart);
  liveness.Sample(k, {.direct_path = true}, kStart + absl::Seconds(10));
  liveness.SetPresence(k, false, kStart + absl::Seconds(10), kStart + absl::Seconds(11));
  liveness.Sample(k, {.direct_path = true}, kStart + absl::Milliseconds(11500));
  EXPECT_FALSE(liveness.View(k, kStart + absl::Milliseconds(11600)).online);
  liveness.Sample(k, {.direct_path = true}, kStart + absl::Milliseconds(13500));
  EXPECT_TRUE(liveness.View(k, kStart + absl::Milliseconds(13600)).online);
}

TEST(PeerLivenessTest, RejectedResponsesWarnOfAPresharedKeyMismatchUntilAHandshakeWorks) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.Sample(k, {.handshakes_completed = 1}, kStart);
  liveness.Sample(k, {.handshakes_completed = 1, .handshake_responses_rejected = 2},
                  kStart + absl::Seconds(5));
  PeerLivenessView view = liveness.View(k, kStart + absl::Seconds(6));
  EXPECT_EQ(view.handshake_failures, 2u);
  ASSERT_EQ(view.warnings.size(), 1u);
  EXPECT_NE(view.warnings[0].find("preshared key mismatch?"), std::string::npos);
  // It fades after the window...
  EXPECT_TRUE(liveness.View(k, kStart + absl::Minutes(4)).warnings.empty());
  // ... and a handshake that works afterwards clears it at once (the count stays).
  liveness.Sample(k, {.handshakes_completed = 2, .handshake_responses_rejected = 2},
                  kStart + absl::Seconds(7));
  view = liveness.View(k, kStart + absl::Seconds(8));
  EXPECT_TRUE(view.warnings.empty());
  EXPECT_EQ(view.handshake_failures, 2u);
}

TEST(PeerLivenessTest, HandshakeTimeoutsWarn) {
  PeerLiveness liveness;
  const PublicKey k = Key(1);
  liveness.Sample(k, {.handshake_timeouts = 1}, kStart);
  PeerLivenessView view = liveness.View(k, kStart + absl::Seconds(1));
  ASSERT_EQ(view.warnings.size(), 1u);
  EXPECT_NE(view.warnings[0].find("unanswered"), std::string::npos);
  EXPECT_EQ(view.handshake_failures, 1u);
}

}  // namespace
}  // namespace tunnelmesh
