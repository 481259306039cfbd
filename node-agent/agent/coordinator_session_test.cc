#include "node-agent/agent/coordinator_session.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

constexpr char kTarget[] = "198.51.100.1:7700";

TEST(DescribeCoordinatorFailureTest, PutsTheLibrarysConnectionFailuresInWords) {
  EXPECT_EQ(DescribeCoordinatorFailure(
                kTarget,
                absl::UnavailableError("failed to connect to all addresses; last error: UNKNOWN: "
                                       "ipv4:198.51.100.1:7700: Failed to connect to remote host: "
                                       "Connection refused")),
            "cannot reach the coordinator at 198.51.100.1:7700 (connection refused)");
  EXPECT_EQ(DescribeCoordinatorFailure(
                kTarget, absl::UnavailableError("DNS resolution failed for coord.invalid:7700")),
            "cannot reach the coordinator at 198.51.100.1:7700 (the name did not resolve)");
  EXPECT_EQ(DescribeCoordinatorFailure(kTarget, absl::DeadlineExceededError("Deadline Exceeded")),
            "cannot reach the coordinator at 198.51.100.1:7700 (timed out)");
}

// The coordinator's own answers are passed on as they are, even when they mention a timeout or a
// refused connection of their own.
TEST(DescribeCoordinatorFailureTest, KeepsTheCoordinatorsOwnWords) {
  const absl::Status review = absl::UnavailableError(
      "the API server did not answer the TokenReview: Connection timed out; try again");
  EXPECT_EQ(DescribeCoordinatorFailure(kTarget, review), review.message());
  const absl::Status meshes =
      absl::FailedPreconditionError("the coordinator serves several meshes (or none): name one");
  EXPECT_EQ(DescribeCoordinatorFailure(kTarget, meshes), meshes.message());
}

}  // namespace
}  // namespace tunnelmesh
