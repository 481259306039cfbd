#include "operator/kube/token_review.h"

#include "gtest/gtest.h"
#include "operator/kube/testing/fake_api.h"

namespace tunnelmesh::kube {
namespace {

TEST(TokenReviewTest, AcceptedTokenNamesItsUser) {
  testing::FakeApi api;
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json& review) {
    if (review["spec"]["token"] != "good") {
      return absl::StatusOr<nlohmann::json>(
          nlohmann::json{{"status", {{"authenticated", false}, {"error", "token expired"}}}});
    }
    return absl::StatusOr<nlohmann::json>(nlohmann::json{
        {"status",
         {{"authenticated", true}, {"user", {{"username", "system:serviceaccount:tm:agent"}}}}}});
  });
  absl::StatusOr<std::string> user = ReviewToken(&api, "good");
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(*user, "system:serviceaccount:tm:agent");
  absl::StatusOr<std::string> refused = ReviewToken(&api, "bad");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("token expired"), std::string::npos);
}

TEST(TokenReviewTest, ServerTroubleIsUnavailableAndOddAnswersAreRefusals) {
  testing::FakeApi api;
  api.FailNext("create", "tokenreviews", absl::PermissionDeniedError("403 forbidden"));
  EXPECT_EQ(ReviewToken(&api, "t").status().code(), absl::StatusCode::kUnavailable);
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json&) {
    return absl::StatusOr<nlohmann::json>(nlohmann::json{{"status", "garbage"}});
  });
  EXPECT_EQ(ReviewToken(&api, "t").status().code(), absl::StatusCode::kUnauthenticated);
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json&) {
    return absl::StatusOr<nlohmann::json>(nlohmann::json{{"status", {{"authenticated", true}}}});
  });
  EXPECT_EQ(ReviewToken(&api, "t").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenReviewTest, ServiceAccountFlag) {
  EXPECT_EQ(*ServiceAccountUser("tm/agent", "--f"), "system:serviceaccount:tm:agent");
  for (const char* bad : {"", "tm", "/agent", "tm/", "a/b/c"}) {
    absl::StatusOr<std::string> user = ServiceAccountUser(bad, "--agent-service-account");
    EXPECT_EQ(user.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(user.status().message().find("--agent-service-account"), std::string::npos);
  }
}

}  // namespace
}  // namespace tunnelmesh::kube
