#include "operator/kube/token_review.h"

#include <algorithm>
#include <string>
#include <vector>

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
  absl::StatusOr<ReviewedToken> user = ReviewToken(&api, "good");
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(user->user, "system:serviceaccount:tm:agent");
  EXPECT_TRUE(user->pod_name.empty());
  EXPECT_TRUE(user->node.empty());
  absl::StatusOr<ReviewedToken> refused = ReviewToken(&api, "bad");
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

// What a 1.20+ API server answers for a pod-bound projected token: the audiences it matched, and
// the pod (and from 1.30 the node) in user.extra.
nlohmann::json BoundAnswer(const nlohmann::json& review, bool with_node) {
  const nlohmann::json& want = review["spec"].value("audiences", nlohmann::json::array());
  if (review["spec"]["token"] != "projected" ||
      std::find(want.begin(), want.end(), "tunnelmesh") == want.end()) {
    return nlohmann::json{{"status",
                           {{"authenticated", false},
                            {"error",
                             "token audiences [\"api\"] is invalid for the "
                             "target audiences [\"tunnelmesh\"]"}}}};
  }
  nlohmann::json extra = {{"authentication.kubernetes.io/pod-name", {"agent-x7k2p"}},
                          {"authentication.kubernetes.io/pod-uid", {"1234"}}};
  if (with_node) extra["authentication.kubernetes.io/node-name"] = {"node-b"};
  return nlohmann::json{
      {"status",
       {{"authenticated", true},
        {"audiences", {"tunnelmesh"}},
        {"user", {{"username", "system:serviceaccount:tm:agent"}, {"extra", extra}}}}}};
}

const Resource kTestPods{"", "v1", "pods", true, "Pod"};

TEST(TokenReviewTest, SendsTheAudienceAndReadsTheBoundPodAndNode) {
  testing::FakeApi api;
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json& review) {
    return absl::StatusOr<nlohmann::json>(BoundAnswer(review, /*with_node=*/true));
  });
  absl::StatusOr<ReviewedToken> r = ReviewBoundToken(&api, "projected", {"tunnelmesh"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->audiences, std::vector<std::string>{"tunnelmesh"});
  EXPECT_EQ(r->pod_namespace, "tm");
  EXPECT_EQ(r->pod_name, "agent-x7k2p");
  EXPECT_EQ(r->node, "node-b") << "the node-name claim, without asking for the pod";
  // Without the audience the API server refuses the token.
  EXPECT_EQ(ReviewBoundToken(&api, "projected", {}).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(TokenReviewTest, ResolvesThePodsNodeBefore130) {
  testing::FakeApi api;
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json& review) {
    return absl::StatusOr<nlohmann::json>(BoundAnswer(review, /*with_node=*/false));
  });
  // The pod is not there (deleted): its token is refused.
  absl::StatusOr<ReviewedToken> r = ReviewBoundToken(&api, "projected", {"tunnelmesh"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  ASSERT_TRUE(api.Create(kTestPods, "tm",
                         {{"apiVersion", "v1"},
                          {"kind", "Pod"},
                          {"metadata", {{"name", "agent-x7k2p"}, {"namespace", "tm"}}},
                          {"spec", {{"nodeName", "node-c"}}}})
                  .ok());
  r = ReviewBoundToken(&api, "projected", {"tunnelmesh"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->node, "node-c");
  // The API server cannot be asked for the pod: retry later, not a refusal.
  api.FailNext("get", "pods", absl::PermissionDeniedError("403 pods is forbidden"));
  r = ReviewBoundToken(&api, "projected", {"tunnelmesh"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("get on pods"), std::string::npos) << r.status();
}

TEST(TokenReviewCacheTest, CachesByTokenAndRateLimitsNewReviews) {
  absl::Time now = absl::FromUnixSeconds(1000);
  int calls = 0;
  TokenReviewCache::Options options;
  options.ttl = absl::Seconds(30);
  options.max_per_second = 2;
  options.now = [&now] { return now; };
  TokenReviewCache cache(
      [&calls](const std::string& token) -> absl::StatusOr<ReviewedToken> {
        ++calls;
        if (token == "down") return absl::UnavailableError("API server down");
        if (token.rfind("good", 0) == 0) {
          ReviewedToken reviewed;
          reviewed.user = "u:" + token;
          return reviewed;
        }
        return absl::UnauthenticatedError("not accepted");
      },
      options);
  ASSERT_TRUE(cache.Review("good-1").ok());
  EXPECT_EQ(cache.Review("bad").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(calls, 2);
  // Both results are reused (a refusal too), without spending the rate.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(cache.Review("good-1")->user, "u:good-1");
    EXPECT_EQ(cache.Review("bad").status().code(), absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(calls, 2);
  // The burst (2) is spent: a new token is refused as retryable, without a call.
  absl::StatusOr<ReviewedToken> limited = cache.Review("good-2");
  EXPECT_EQ(limited.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 2);
  // Half a second later one review is allowed again.
  now += absl::Milliseconds(500);
  EXPECT_TRUE(cache.Review("good-2").ok());
  EXPECT_EQ(calls, 3);
  // Unavailable is not cached.
  now += absl::Seconds(1);
  EXPECT_EQ(cache.Review("down").status().code(), absl::StatusCode::kUnavailable);
  now += absl::Seconds(1);
  EXPECT_EQ(cache.Review("down").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 5);
  // After the TTL the token is reviewed again (it may have been revoked meanwhile).
  now += absl::Seconds(31);
  EXPECT_TRUE(cache.Review("good-1").ok());
  EXPECT_EQ(calls, 6);
  const TokenReviewCache::Counters c = cache.counters();
  EXPECT_EQ(c.reviews, 6u);
  EXPECT_EQ(c.cache_hits, 10u);
  EXPECT_EQ(c.rate_limited, 1u);
}

TEST(TokenReviewCacheTest, StaysBoundedUnderAFloodOfDistinctTokens) {
  absl::Time now = absl::FromUnixSeconds(1000);
  TokenReviewCache::Options options;
  options.max_entries = 8;
  options.max_per_second = 1000;
  options.now = [&now] { return now; };
  int calls = 0;
  TokenReviewCache cache(
      [&calls](const std::string&) -> absl::StatusOr<ReviewedToken> {
        ++calls;
        return absl::UnauthenticatedError("not accepted");
      },
      options);
  for (int i = 0; i < 100; ++i) {
    now += absl::Milliseconds(10);
    EXPECT_FALSE(cache.Review("guess-" + std::to_string(i)).ok());
  }
  EXPECT_EQ(calls, 100);
  // The most recent token is still cached after the flood.
  EXPECT_FALSE(cache.Review("guess-99").ok());
  EXPECT_EQ(calls, 100);
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
