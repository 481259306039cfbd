// Register with a ServiceAccount token (Kubernetes mode), through a fake review hook standing in
// for the API server's TokenReview (operator/kube/token_review.h): only the agent's ServiceAccount,
// only tokens for audience "tunnelmesh", and a member of kind Node only under the name of the
// Node its token's pod runs on (finding 10 of the security review).
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"

namespace tunnelmesh {
namespace {

constexpr char kAgent[] = "system:serviceaccount:tm:agent";

class ServiceAccountRegisterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    // token -> what the API server says of it.
    tokens_["node-1-pod"] = ServiceAccountToken{kAgent, {"tunnelmesh"}, "node-1"};
    tokens_["node-2-pod"] = ServiceAccountToken{kAgent, {"tunnelmesh"}, "node-2"};
    tokens_["api-audience"] = ServiceAccountToken{kAgent, {"https://kubernetes.default.svc"}, ""};
    tokens_["unbound"] = ServiceAccountToken{kAgent, {"tunnelmesh"}, ""};
    tokens_["other-sa"] =
        ServiceAccountToken{"system:serviceaccount:tm:other", {"tunnelmesh"}, "node-1"};
    Coordinator::Options options;
    options.agent_service_account = kAgent;
    options.review_token = [this](const std::string& token) -> absl::StatusOr<ServiceAccountToken> {
      ++reviews_;
      auto it = tokens_.find(token);
      if (it == tokens_.end()) return absl::UnauthenticatedError("token not accepted");
      return it->second;
    };
    options.node_exists = [](const std::string& node) {
      return node == "node-1" || node == "node-2";
    };
    coordinator_ = std::make_unique<Coordinator>(&store_, options);
    coordinator_->SetMeshes(Meshes(MeshManifest(16)));
  }

  absl::StatusOr<coord::RegisterResponse> RegisterNode(const std::string& name,
                                                       const std::string& token) {
    coord::RegisterRequest r = Request(NewKey(), name, "");
    r.set_kubernetes_token(token);
    r.set_kind(coord::MEMBER_KIND_NODE);
    return RegisterAs(*coordinator_, r);
  }

  std::map<std::string, ServiceAccountToken> tokens_;
  int reviews_ = 0;
  FakeMemberStore store_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(ServiceAccountRegisterTest, NodeOfItsOwnTokenWithTheRightAudienceIsAdmitted) {
  absl::StatusOr<coord::RegisterResponse> r = RegisterNode("node-1", "node-1-pod");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name(), "node-1");
  r = RegisterNode("node-2", "node-2-pod");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(coordinator_->counters().rejected_tokens.load(), 0u);
}

TEST_F(ServiceAccountRegisterTest, TheJoinTokensCapDoesNotLimitServiceAccountJoins) {
  std::string manifest = MeshManifest(16);
  manifest.insert(manifest.find("  joinTokenSecretRef"), "  joinTokenMaxMembers: 1\n");
  coordinator_->SetMeshes(Meshes(manifest));
  ASSERT_TRUE(RegisterNode("node-1", "node-1-pod").ok());
  absl::StatusOr<coord::RegisterResponse> r = RegisterNode("node-2", "node-2-pod");
  ASSERT_TRUE(r.ok()) << r.status();
  // The mesh holds two members now: a laptop with the join token is over the cap.
  EXPECT_EQ(RegisterAs(*coordinator_, Request(NewKey(), "laptop")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->counters().refused_token_cap.load(), 1u);
}

TEST_F(ServiceAccountRegisterTest, AnotherNodesNameIsRefusedNamingTheTokensNode) {
  absl::StatusOr<coord::RegisterResponse> r = RegisterNode("node-2", "node-1-pod");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("pod on Node \"node-1\""), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("\"node-2\""), std::string::npos) << r.status();
  EXPECT_EQ(coordinator_->member_count(), 0u);
  EXPECT_EQ(coordinator_->counters().rejected_tokens.load(), 1u);
}

TEST_F(ServiceAccountRegisterTest, TokenForAnotherAudienceIsRefused) {
  absl::StatusOr<coord::RegisterResponse> r = RegisterNode("node-1", "api-audience");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("audience \"tunnelmesh\""), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("--kubernetes-token-file"), std::string::npos);
}

TEST_F(ServiceAccountRegisterTest, NodeNeedsAPodBoundToken) {
  absl::StatusOr<coord::RegisterResponse> r = RegisterNode("node-1", "unbound");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("bound to a pod"), std::string::npos) << r.status();
  // Other kinds carry no Node name to check: the ServiceAccount and audience suffice.
  coord::RegisterRequest external = Request(NewKey(), "tool", "");
  external.set_kubernetes_token("unbound");
  EXPECT_TRUE(RegisterAs(*coordinator_, external).ok());
}

TEST_F(ServiceAccountRegisterTest, OtherServiceAccountsAndUnknownTokensAreRefused) {
  EXPECT_EQ(RegisterNode("node-1", "other-sa").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RegisterNode("node-1", "forged").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->counters().rejected_tokens.load(), 2u);
  // A refused token never reaches the join-token check or the member map.
  EXPECT_EQ(coordinator_->member_count(), 0u);
}

TEST_F(ServiceAccountRegisterTest, ApiServerTroubleIsUnavailableAndNotCountedAsRejection) {
  coordinator_.reset();
  Coordinator::Options options;
  options.agent_service_account = kAgent;
  options.review_token = [](const std::string&) -> absl::StatusOr<ServiceAccountToken> {
    return absl::UnavailableError("too many ServiceAccount token reviews right now");
  };
  coordinator_ = std::make_unique<Coordinator>(&store_, options);
  coordinator_->SetMeshes(Meshes(MeshManifest(16)));
  EXPECT_EQ(RegisterNode("node-1", "node-1-pod").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(coordinator_->counters().rejected_tokens.load(), 0u);
}

}  // namespace
}  // namespace tunnelmesh
