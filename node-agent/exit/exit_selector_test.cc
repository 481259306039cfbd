#include "node-agent/exit/exit_selector.h"

#include <gtest/gtest.h>

namespace tunnelmesh {
namespace {

PublicKey Key(uint8_t b) {
  PublicKey key;
  key.bytes.fill(b);
  return key;
}

class ExitSelectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    selector_.SetCandidates({a_, b_});
    selector_.SetInMap(a_, true);
    selector_.SetInMap(b_, true);
  }
  // Advances the clock by `seconds` and samples `key` with the given counters.
  void Step(int seconds) { now_ += absl::Seconds(seconds); }

  ExitSelector selector_;
  PublicKey a_ = Key(1), b_ = Key(2);
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

TEST_F(ExitSelectorTest, PicksTheFirstHealthyCandidate) {
  EXPECT_TRUE(selector_.Update(now_));
  ASSERT_TRUE(selector_.active().has_value());
  EXPECT_EQ(*selector_.active(), a_);
  EXPECT_FALSE(selector_.Update(now_));
}

TEST_F(ExitSelectorTest, NoCandidateInTheMapMeansNone) {
  selector_.SetInMap(a_, false);
  selector_.SetInMap(b_, false);
  selector_.Update(now_);
  EXPECT_FALSE(selector_.active().has_value());
  const auto views = selector_.View(now_);
  ASSERT_EQ(views.size(), 2u);
  EXPECT_FALSE(views[0].healthy);
  EXPECT_EQ(views[0].reason, "not a peer in the network map");
}

TEST_F(ExitSelectorTest, OfflinePresenceFailsOverAndBack) {
  selector_.SetPresence(a_, true, now_);
  selector_.Update(now_);
  selector_.SetPresence(a_, false, now_);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), b_);
  EXPECT_EQ(selector_.View(now_)[0].reason, "its agent is offline (coordinator)");
  selector_.SetPresence(a_, true, now_);
  // Back, but it settles first (or answers).
  EXPECT_FALSE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), b_);
  now_ += kExitSettle;
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), a_);
  EXPECT_EQ(selector_.switches(), 3u);
}

TEST_F(ExitSelectorTest, UnansweredTrafficFailsOver) {
  selector_.Update(now_);
  selector_.Sample(a_, {.tx_packets = 10, .rx_packets = 10}, now_);  // Baseline.
  Step(1);
  selector_.Sample(a_, {.tx_packets = 20, .rx_packets = 10}, now_);  // Sent, no answer.
  EXPECT_FALSE(selector_.Update(now_));
  Step(1);
  selector_.Sample(a_, {.tx_packets = 30, .rx_packets = 10}, now_);
  EXPECT_FALSE(selector_.Update(now_));
  Step(2);  // kExitAnswerTimeout after the first unanswered send.
  selector_.Sample(a_, {.tx_packets = 40, .rx_packets = 10}, now_);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), b_);
  // Still dead a while later, with nothing heard.
  Step(10);
  selector_.Sample(a_, {.tx_packets = 40, .rx_packets = 10}, now_);
  EXPECT_FALSE(selector_.Update(now_));
  // It answers again (a keepalive or handshake): preferred again.
  Step(1);
  selector_.Sample(a_, {.tx_packets = 40, .rx_packets = 11}, now_);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), a_);
}

TEST_F(ExitSelectorTest, AnsweredTrafficStaysHealthy) {
  selector_.Update(now_);
  uint64_t tx = 0, rx = 0;
  for (int i = 0; i < 20; ++i) {
    tx += 10;
    rx += 10;
    selector_.Sample(a_, {.tx_packets = tx, .rx_packets = rx}, now_);
    EXPECT_FALSE(selector_.Update(now_));
    Step(1);
  }
  EXPECT_EQ(*selector_.active(), a_);
}

TEST_F(ExitSelectorTest, DirectPathCountsAsAnswerForOneWayTraffic) {
  selector_.Update(now_);
  selector_.Sample(a_, {}, now_);
  for (uint64_t i = 1; i < 10; ++i) {
    Step(1);
    selector_.Sample(a_, {.tx_packets = i * 100, .direct_path = true}, now_);
    EXPECT_FALSE(selector_.Update(now_));
  }
  EXPECT_EQ(*selector_.active(), a_);
  // Alive, but nothing authenticated came back: a new handshake is due (a restarted exit forgot
  // the session), and one packet from it ends that.
  EXPECT_TRUE(selector_.NeedsHandshake(a_, now_));
  Step(1);
  selector_.Sample(a_, {.tx_packets = 1000, .rx_packets = 1, .direct_path = true}, now_);
  EXPECT_FALSE(selector_.NeedsHandshake(a_, now_));
}

TEST_F(ExitSelectorTest, UnansweredHandshakesFailOver) {
  selector_.Update(now_);
  selector_.Sample(a_, {}, now_);
  Step(1);
  selector_.Sample(a_, {.handshakes_initiated = 1}, now_);
  Step(3);
  selector_.Sample(a_, {.handshakes_initiated = 2}, now_);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), b_);
}

TEST_F(ExitSelectorTest, DeadExitIsRetriedAfterAWhile) {
  selector_.Update(now_);
  selector_.Sample(a_, {}, now_);
  Step(1);
  selector_.Sample(a_, {.tx_packets = 1}, now_);
  Step(3);
  selector_.Update(now_);
  EXPECT_EQ(*selector_.active(), b_);
  now_ += kExitRetryAfter;
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), a_);
}

TEST_F(ExitSelectorTest, RestartedAgentIsTriedAgainSoon) {
  selector_.SetPresence(a_, true, now_);
  selector_.Update(now_);
  selector_.Sample(a_, {}, now_);
  Step(1);
  selector_.Sample(a_, {.tx_packets = 1}, now_);
  Step(3);
  selector_.Update(now_);
  EXPECT_EQ(*selector_.active(), b_);
  selector_.SetPresence(a_, false, now_);
  selector_.SetPresence(a_, true, now_);
  EXPECT_FALSE(selector_.Update(now_));
  // A packet from it ends the settling at once.
  Step(1);
  selector_.Sample(a_, {.tx_packets = 1, .rx_packets = 1}, now_);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), a_);
}

TEST_F(ExitSelectorTest, NewListForgetsOldCandidates) {
  selector_.Update(now_);
  selector_.SetCandidates({b_});
  selector_.SetInMap(b_, true);
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_EQ(*selector_.active(), b_);
  selector_.SetCandidates({});
  EXPECT_TRUE(selector_.Update(now_));
  EXPECT_FALSE(selector_.active().has_value());
  EXPECT_TRUE(selector_.View(now_).empty());
}

}  // namespace
}  // namespace tunnelmesh
