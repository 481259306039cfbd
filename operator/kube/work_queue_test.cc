#include "operator/kube/work_queue.h"

#include <thread>

#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

TEST(WorkQueueTest, DeduplicatesAndKeepsOrder) {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  q.Add("a");
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.Get(absl::ZeroDuration()), "a");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), "b");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), std::nullopt);
}

TEST(WorkQueueTest, KeyAddedWhileProcessingComesBackAfterDone) {
  WorkQueue q;
  q.Add("a");
  ASSERT_EQ(q.Get(absl::ZeroDuration()), "a");
  q.Add("a");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), std::nullopt) << "not handed out twice at once";
  q.Done("a");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), "a");
  q.Done("a");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), std::nullopt);
}

TEST(WorkQueueTest, BoundedAndCounted) {
  WorkQueue::Options options;
  options.max_keys = 2;
  WorkQueue q(options);
  q.Add("a");
  q.Add("b");
  q.Add("c");
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.counters().dropped.load(), 1u);
}

TEST(WorkQueueTest, DelayedAndRateLimited) {
  WorkQueue::Options options;
  options.min_retry = std::chrono::milliseconds(10);
  options.max_retry = std::chrono::milliseconds(40);
  WorkQueue q(options);
  const absl::Time start = absl::Now();
  q.AddAfter("a", absl::Milliseconds(30));
  EXPECT_EQ(q.Get(absl::ZeroDuration()), std::nullopt);
  EXPECT_EQ(q.Get(absl::Seconds(10)), "a");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
  q.Done("a");
  // Backoff doubles per failure (jitter 0.25): the third retry waits at least 30 ms.
  q.AddRateLimited("b");
  ASSERT_EQ(q.Get(absl::Seconds(10)), "b");
  q.Done("b");
  q.AddRateLimited("b");
  ASSERT_EQ(q.Get(absl::Seconds(10)), "b");
  q.Done("b");
  const absl::Time third = absl::Now();
  q.AddRateLimited("b");
  ASSERT_EQ(q.Get(absl::Seconds(10)), "b");
  EXPECT_GE(absl::Now() - third, absl::Milliseconds(29));
  q.Done("b");
  q.Forget("b");
  const absl::Time fresh = absl::Now();
  q.AddRateLimited("b");
  ASSERT_EQ(q.Get(absl::Seconds(10)), "b");
  EXPECT_LT(absl::Now() - fresh, absl::Milliseconds(30) + absl::Seconds(1));
  EXPECT_EQ(q.counters().retries.load(), 4u);
}

TEST(WorkQueueTest, ShutDownWakesGet) {
  WorkQueue q;
  std::thread waiter([&] { EXPECT_EQ(q.Get(absl::Seconds(30)), std::nullopt); });
  q.ShutDown();
  waiter.join();
  q.Add("a");
  EXPECT_EQ(q.Get(absl::ZeroDuration()), std::nullopt);
}

}  // namespace
}  // namespace tunnelmesh::kube
