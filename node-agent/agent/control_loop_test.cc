#include "node-agent/agent/control_loop.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"

namespace tunnelmesh {
namespace {

TEST(ControlLoopTest, RunsPostsInOrder) {
  FakeClock clock;
  ControlLoop loop(&clock);
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(loop.Post([&order, i] { order.push_back(i); }));
  EXPECT_EQ(loop.RunUntilIdle(), 5u);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(ControlLoopTest, PostsFromAClosureRunAfterIt) {
  FakeClock clock;
  ControlLoop loop(&clock);
  std::vector<std::string> order;
  ASSERT_TRUE(loop.Post([&] {
    order.push_back("a");
    ASSERT_TRUE(loop.OnLoopThread());
    loop.Post([&] { order.push_back("c"); });
  }));
  ASSERT_TRUE(loop.Post([&] { order.push_back("b"); }));
  loop.RunUntilIdle();
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_FALSE(loop.OnLoopThread());
}

TEST(ControlLoopTest, QueueIsBoundedAndOverflowIsCounted) {
  FakeClock clock;
  ControlLoop loop(&clock, /*max_queued=*/3);
  int ran = 0;
  for (int i = 0; i < 5; ++i) loop.Post([&ran] { ++ran; });
  EXPECT_EQ(loop.dropped(), 2u);
  loop.RunUntilIdle();
  EXPECT_EQ(ran, 3);
  // Room again once the queue drained.
  EXPECT_TRUE(loop.Post([&ran] { ++ran; }));
}

TEST(ControlLoopTest, TimersFollowTheClock) {
  FakeClock clock;
  ControlLoop loop(&clock);
  int every = 0, once = 0;
  const ControlLoop::TimerId periodic =
      loop.RunEvery(std::chrono::milliseconds(50), [&every] { ++every; });
  loop.RunAt(clock.Now() + std::chrono::milliseconds(120), [&once] { ++once; });
  EXPECT_EQ(loop.RunUntilIdle(), 0u);
  clock.Advance(std::chrono::milliseconds(50));
  loop.RunUntilIdle();
  EXPECT_EQ(every, 1);
  clock.Advance(std::chrono::milliseconds(50));
  loop.RunUntilIdle();
  EXPECT_EQ(every, 2);
  EXPECT_EQ(once, 0);
  clock.Advance(std::chrono::milliseconds(30));
  loop.RunUntilIdle();
  EXPECT_EQ(once, 1);
  // A loop that fell far behind runs a periodic timer once, not once per missed period.
  clock.Advance(std::chrono::seconds(1));
  loop.RunUntilIdle();
  EXPECT_EQ(every, 3);
  EXPECT_EQ(once, 1);
  loop.Cancel(periodic);
  clock.Advance(std::chrono::seconds(1));
  loop.RunUntilIdle();
  EXPECT_EQ(every, 3);
}

TEST(ControlLoopTest, CallReturnsTheLoopThreadsResult) {
  SystemClock clock;
  ControlLoop loop(&clock);
  loop.Start();
  std::atomic<int> counter{0};
  for (int i = 0; i < 100; ++i) loop.Post([&counter] { counter.fetch_add(1); });
  std::optional<int> seen =
      loop.Call<int>([&counter] { return counter.load(); }, absl::Seconds(10));
  ASSERT_TRUE(seen.has_value());
  // Posted before the call, so they ran before it.
  EXPECT_EQ(*seen, 100);
  std::optional<bool> on_loop =
      loop.Call<bool>([&loop] { return loop.OnLoopThread(); }, absl::Seconds(10));
  ASSERT_TRUE(on_loop.has_value());
  EXPECT_TRUE(*on_loop);
  loop.Stop();
  EXPECT_FALSE(loop.Post([] {}));
  EXPECT_FALSE(loop.Call<int>([] { return 1; }, absl::Milliseconds(10)).has_value());
}

TEST(ControlLoopTest, CallTimesOutWhenTheLoopIsBusy) {
  SystemClock clock;
  ControlLoop loop(&clock);
  loop.Start();
  absl::Notification release;
  loop.Post([&release] { release.WaitForNotification(); });
  EXPECT_FALSE(loop.Call<int>([] { return 1; }, absl::Milliseconds(20)).has_value());
  release.Notify();
  EXPECT_EQ(loop.Call<int>([] { return 2; }, absl::Seconds(10)), 2);
}

TEST(ControlLoopTest, ThreadRunsRealTimeTimers) {
  SystemClock clock;
  ControlLoop loop(&clock);
  absl::Notification fired;
  loop.RunAt(clock.Now() + std::chrono::milliseconds(5), [&fired] { fired.Notify(); });
  loop.Start();
  EXPECT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

}  // namespace
}  // namespace tunnelmesh
