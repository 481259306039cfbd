#include "lib/base/rlimit.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

// Restores the process's descriptor limit when a test changed it.
class RlimitTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved_), 0); }
  void TearDown() override { EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &saved_), 0); }
  rlimit saved_{};
};

TEST_F(RlimitTest, RaisesTheSoftLimitToTheHardLimit) {
  rlimit low = saved_;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  absl::StatusOr<DescriptorLimit> raised = RaiseDescriptorLimit();
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(raised->soft_before, 64u);
  EXPECT_EQ(raised->hard, saved_.rlim_max);
  EXPECT_GT(raised->soft, 64u);
  if (saved_.rlim_max != RLIM_INFINITY) {
    EXPECT_EQ(raised->soft, saved_.rlim_max);
  }
  EXPECT_EQ(DescriptorSoftLimit(), raised->soft);
  // Raising again changes nothing.
  absl::StatusOr<DescriptorLimit> again = RaiseDescriptorLimit();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->soft_before, raised->soft);
  EXPECT_EQ(again->soft, raised->soft);
}

TEST_F(RlimitTest, CountsOpenDescriptors) {
  absl::StatusOr<size_t> before = CountOpenDescriptors();
  ASSERT_TRUE(before.ok()) << before.status();
  const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  absl::StatusOr<size_t> after = CountOpenDescriptors();
  close(fd);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, *before + 1);
}

// The lowest descriptor number the next open would get: RLIMIT_NOFILE limits descriptor numbers,
// so with the limit there, nothing can be opened (EMFILE).
int LowestFreeDescriptor() {
  const int fd = dup(0);
  close(fd);
  return fd;
}

TEST_F(RlimitTest, ExhaustedDescriptorsAreNotAvailable) {
  absl::StatusOr<size_t> open = CountOpenDescriptors();
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_TRUE(DescriptorsAvailable(8));
  // Not even the listing's descriptor can be had.
  rlimit exhausted = saved_;
  exhausted.rlim_cur = LowestFreeDescriptor();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &exhausted), 0);
  EXPECT_EQ(CountOpenDescriptors().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(DescriptorsAvailable(0));
  // A little room, but less than asked for.
  exhausted.rlim_cur = *open + 4;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &exhausted), 0);
  EXPECT_FALSE(DescriptorsAvailable(8));
  EXPECT_TRUE(DescriptorsAvailable(2));
}

}  // namespace
}  // namespace tunnelmesh
