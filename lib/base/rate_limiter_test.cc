#include "lib/base/rate_limiter.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'000'000);

TEST(KeyedRateLimiter, BurstThenRate) {
  KeyedRateLimiter limiter({.rate = 2, .burst = 3, .max_keys = 16});
  EXPECT_TRUE(limiter.Allow("a", kStart));
  EXPECT_TRUE(limiter.Allow("a", kStart));
  EXPECT_TRUE(limiter.Allow("a", kStart));
  EXPECT_FALSE(limiter.Allow("a", kStart));
  EXPECT_FALSE(limiter.HasToken("a", kStart));
  // Other keys have their own buckets.
  EXPECT_TRUE(limiter.Allow("b", kStart));
  // Two tokens per second: one after half a second, not two.
  EXPECT_TRUE(limiter.Allow("a", kStart + absl::Milliseconds(500)));
  EXPECT_FALSE(limiter.Allow("a", kStart + absl::Milliseconds(500)));
  // Never more than the burst, however long the pause.
  const absl::Time later = kStart + absl::Hours(1);
  int allowed = 0;
  while (limiter.Allow("a", later)) ++allowed;
  EXPECT_EQ(allowed, 3);
}

TEST(KeyedRateLimiter, HasTokenTakesNothing) {
  KeyedRateLimiter limiter({.rate = 1, .burst = 1, .max_keys = 16});
  EXPECT_TRUE(limiter.HasToken("a", kStart));
  EXPECT_TRUE(limiter.HasToken("a", kStart));
  EXPECT_TRUE(limiter.Allow("a", kStart));
  EXPECT_FALSE(limiter.HasToken("a", kStart));
}

TEST(KeyedRateLimiter, ForgetsTheLeastRecentlyUsedKeyWhenFull) {
  KeyedRateLimiter limiter({.rate = 0.001, .burst = 1, .max_keys = 2});
  EXPECT_TRUE(limiter.Allow("a", kStart));
  EXPECT_TRUE(limiter.Allow("b", kStart));
  EXPECT_FALSE(limiter.Allow("a", kStart));  // "a" is now the most recently used.
  EXPECT_TRUE(limiter.Allow("c", kStart));   // Forgets "b".
  EXPECT_EQ(limiter.size(), 2u);
  EXPECT_FALSE(limiter.Allow("a", kStart));  // Still remembered: empty.
  EXPECT_TRUE(limiter.Allow("b", kStart));   // Forgotten: a full bucket again.
}

}  // namespace
}  // namespace tunnelmesh
