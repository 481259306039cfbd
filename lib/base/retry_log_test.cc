#include "lib/base/retry_log.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

// A 60 s outage retried every 300 ms: one first line, a handful of summaries, one recovery.
TEST(RetryLogTest, AMinuteOfFastRetriesGivesAFewLines) {
  RetryLog log(7);
  const absl::Time start = absl::FromUnixSeconds(1000);
  int first = 0, summaries = 0;
  absl::Time last_summary = start;
  absl::Duration longest_gap;
  for (absl::Duration t; t <= absl::Seconds(60); t += absl::Milliseconds(300)) {
    switch (log.OnFailure(start + t)) {
      case RetryLog::Say::kFirst:
        ++first;
        break;
      case RetryLog::Say::kSummary:
        ++summaries;
        longest_gap = std::max(longest_gap, start + t - last_summary);
        last_summary = start + t;
        break;
      case RetryLog::Say::kNothing:
        break;
    }
  }
  EXPECT_EQ(first, 1);
  EXPECT_GE(summaries, 3);
  EXPECT_LE(summaries, 7);
  EXPECT_LE(longest_gap, absl::Seconds(31));
  EXPECT_EQ(log.attempts(), 201);
  std::optional<RetryLog::Outage> outage = log.OnSuccess(start + absl::Seconds(61));
  ASSERT_TRUE(outage.has_value());
  EXPECT_EQ(outage->attempts, 201);
  EXPECT_EQ(outage->elapsed, absl::Seconds(61));
  EXPECT_FALSE(log.failing());
}

TEST(RetryLogTest, SpacingIsCappedNearThirtySeconds) {
  RetryLog log(11);
  const absl::Time start = absl::FromUnixSeconds(0);
  absl::Time last = start;
  int summaries = 0;
  log.OnFailure(start);
  for (absl::Duration t = absl::Seconds(1); t <= absl::Hours(1); t += absl::Seconds(1)) {
    if (log.OnFailure(start + t) == RetryLog::Say::kSummary) {
      EXPECT_LE(start + t - last, absl::Seconds(31));
      last = start + t;
      ++summaries;
    }
  }
  // An hour at about one line per 20-30 s: far from one line per attempt.
  EXPECT_GE(summaries, 110);
  EXPECT_LE(summaries, 200);
}

TEST(RetryLogTest, SuccessWithoutFailureIsNoOutageAndANewOutageStartsOver) {
  RetryLog log(3);
  const absl::Time start = absl::FromUnixSeconds(0);
  EXPECT_FALSE(log.OnSuccess(start).has_value());
  EXPECT_EQ(log.OnFailure(start), RetryLog::Say::kFirst);
  EXPECT_EQ(log.OnFailure(start + absl::Milliseconds(100)), RetryLog::Say::kNothing);
  ASSERT_TRUE(log.OnSuccess(start + absl::Seconds(1)).has_value());
  EXPECT_EQ(log.OnFailure(start + absl::Seconds(2)), RetryLog::Say::kFirst);
  EXPECT_EQ(log.attempts(), 1);
}

TEST(RetryLogTest, FormatsDurations) {
  EXPECT_EQ(FormatOutageDuration(absl::Milliseconds(45400)), "45 s");
  EXPECT_EQ(FormatOutageDuration(absl::Seconds(125)), "2 min 5 s");
  EXPECT_EQ(FormatOutageDuration(absl::Seconds(3 * 3600 + 120)), "3 h 2 min");
}

}  // namespace
}  // namespace tunnelmesh
