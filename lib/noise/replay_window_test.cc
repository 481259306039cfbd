#include "lib/noise/replay_window.h"

#include <random>
#include <set>

#include "gtest/gtest.h"

namespace tunnelmesh::noise {
namespace {

constexpr uint64_t kLimit = UINT64_MAX;

TEST(ReplayWindowTest, AcceptsNewRejectsRepeats) {
  ReplayWindow w;
  EXPECT_TRUE(w.Accept(0, kLimit));
  EXPECT_FALSE(w.Accept(0, kLimit));
  EXPECT_TRUE(w.Accept(1, kLimit));
  EXPECT_TRUE(w.Accept(5, kLimit));
  EXPECT_TRUE(w.Accept(3, kLimit));  // Reordered but inside the window.
  EXPECT_FALSE(w.Accept(3, kLimit));
  EXPECT_TRUE(w.Accept(4, kLimit));
  EXPECT_FALSE(w.Accept(5, kLimit));
}

TEST(ReplayWindowTest, RejectsTooOldAndOverLimit) {
  ReplayWindow w;
  EXPECT_TRUE(w.Accept(10000, kLimit));
  EXPECT_FALSE(w.Accept(10000 - ReplayWindow::kWindowSize, kLimit));
  EXPECT_TRUE(w.Accept(10000 - ReplayWindow::kWindowSize + 1, kLimit));
  EXPECT_FALSE(w.Accept(100, 100));
  EXPECT_TRUE(w.Accept(99 + 10000, 20000));
}

TEST(ReplayWindowTest, LargeJumpClearsOldBits) {
  ReplayWindow w;
  for (uint64_t i = 0; i < 3000; ++i) ASSERT_TRUE(w.Accept(i, kLimit));
  EXPECT_TRUE(w.Accept(1'000'000, kLimit));
  // Counters behind the new window are too old; ones inside it are fresh.
  EXPECT_FALSE(w.Accept(2999, kLimit));
  EXPECT_TRUE(w.Accept(1'000'000 - 10, kLimit));
}

TEST(ReplayWindowTest, MatchesReferenceModelOnRandomInput) {
  std::mt19937_64 rng(42);
  ReplayWindow w;
  std::set<uint64_t> seen;
  uint64_t greatest = 0;
  bool any = false;
  for (int i = 0; i < 200000; ++i) {
    uint64_t base = any ? greatest : 0;
    uint64_t delta = rng() % 3000;
    uint64_t c = rng() % 4 == 0 ? base + delta : (base > delta ? base - delta : delta);
    bool expect =
        !seen.count(c) && (!any || c > greatest || greatest - c < ReplayWindow::kWindowSize);
    ASSERT_EQ(w.Accept(c, kLimit), expect) << "counter " << c << " greatest " << greatest;
    if (expect) {
      seen.insert(c);
      if (!any || c > greatest) greatest = c;
      any = true;
    }
  }
}

}  // namespace
}  // namespace tunnelmesh::noise
