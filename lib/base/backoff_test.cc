#include "lib/base/backoff.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, StartsNearInitialDoublesAndCaps) {
  Backoff backoff(milliseconds(100), milliseconds(1000), 42);
  milliseconds first = backoff.Next();
  EXPECT_GE(first, milliseconds(75));
  EXPECT_LE(first, milliseconds(125));
  milliseconds second = backoff.Next();
  EXPECT_GE(second, milliseconds(150));
  EXPECT_LE(second, milliseconds(250));
  for (int i = 0; i < 20; ++i) {
    milliseconds d = backoff.Next();
    EXPECT_LE(d, milliseconds(1250));
  }
  // At the cap the base stays at max, so delays stay within the jitter of max.
  EXPECT_GE(backoff.Next(), milliseconds(750));
}

TEST(BackoffTest, ResetStartsOver) {
  Backoff backoff(milliseconds(100), milliseconds(10000), 7);
  for (int i = 0; i < 6; ++i) backoff.Next();
  backoff.Reset();
  EXPECT_LE(backoff.Next(), milliseconds(125));
}

TEST(BackoffTest, SameSeedSameDelaysDifferentSeedsSpread) {
  Backoff a(milliseconds(100), milliseconds(10000), 1);
  Backoff b(milliseconds(100), milliseconds(10000), 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.Next(), b.Next());
  // Jitter: across seeds, the first delay is not always the same.
  int distinct = 0;
  milliseconds previous{-1};
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    milliseconds d = Backoff(milliseconds(100), milliseconds(10000), seed).Next();
    if (d != previous) ++distinct;
    previous = d;
  }
  EXPECT_GT(distinct, 5);
}

TEST(BackoffTest, JitterWidthIsAParameter) {
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    Backoff wide(milliseconds(100), milliseconds(600), seed, /*jitter=*/0.5);
    const milliseconds first = wide.Next();
    EXPECT_GE(first, milliseconds(50));
    EXPECT_LE(first, milliseconds(150));
    for (int i = 0; i < 10; ++i) EXPECT_LE(wide.Next(), wide.longest());
  }
  EXPECT_EQ(Backoff(milliseconds(100), milliseconds(600), 1, 0.5).longest(), milliseconds(900));
}

}  // namespace
}  // namespace tunnelmesh
