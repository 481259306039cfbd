#include "operator/coordinator/challenges.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

TEST(ChallengeBook, AcceptsEachChallengeOnceWithinItsLifetime) {
  InitCrypto();
  ChallengeBook book({.lifetime = absl::Seconds(60), .max_used = 16});
  const std::string challenge = book.Issue(kNow);
  EXPECT_TRUE(book.Consume(challenge, kNow + absl::Seconds(1)).ok());
  EXPECT_EQ(book.Consume(challenge, kNow + absl::Seconds(2)).code(), absl::StatusCode::kAborted);
  const std::string late = book.Issue(kNow);
  EXPECT_EQ(book.Consume(late, kNow + absl::Seconds(61)).code(), absl::StatusCode::kAborted);
  // From the future (a clock far ahead) or from another coordinator process: refused.
  EXPECT_FALSE(book.Consume(book.Issue(kNow + absl::Minutes(5)), kNow).ok());
  ChallengeBook other({});
  EXPECT_FALSE(book.Consume(other.Issue(kNow), kNow).ok());
  // Tampered or truncated.
  std::string tampered = book.Issue(kNow);
  tampered[10] ^= 1;
  EXPECT_FALSE(book.Consume(tampered, kNow).ok());
  EXPECT_FALSE(book.Consume(book.Issue(kNow).substr(1), kNow).ok());
  EXPECT_FALSE(book.Consume("", kNow).ok());
}

TEST(ChallengeBook, BoundsTheUsedSetAndForgetsExpiredOnes) {
  InitCrypto();
  ChallengeBook book({.lifetime = absl::Seconds(60), .max_used = 2});
  EXPECT_TRUE(book.Consume(book.Issue(kNow), kNow).ok());
  EXPECT_TRUE(book.Consume(book.Issue(kNow), kNow).ok());
  EXPECT_EQ(book.Consume(book.Issue(kNow), kNow).code(), absl::StatusCode::kResourceExhausted);
  // Once the first two expired, there is room again.
  const absl::Time later = kNow + absl::Seconds(61);
  EXPECT_TRUE(book.Consume(book.Issue(later), later).ok());
}

}  // namespace
}  // namespace tunnelmesh
