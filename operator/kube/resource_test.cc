#include "operator/kube/resource.h"

#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

TEST(ResourcePath, CoreGroupNamespaced) {
  EXPECT_EQ(ResourcePath(kConfigMaps, "default", ""), "/api/v1/namespaces/default/configmaps");
  EXPECT_EQ(ResourcePath(kConfigMaps, "default", "a"), "/api/v1/namespaces/default/configmaps/a");
  EXPECT_EQ(ResourcePath(kConfigMaps, "", ""), "/api/v1/configmaps");
}

TEST(ResourcePath, NamedGroupsAndClusterScope) {
  EXPECT_EQ(ResourcePath(kMeshes, "ignored", "demo", "status"),
            "/apis/tunnelmesh.io/v1alpha1/meshes/demo/status");
  EXPECT_EQ(ResourcePath(kLeases, "kube-system", "op"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/op");
  EXPECT_EQ(ResourcePath(kTokenReviews, "", ""), "/apis/authentication.k8s.io/v1/tokenreviews");
  EXPECT_EQ(ResourcePath(kNodes, "", "a b"), "/api/v1/nodes/a%20b");
}

TEST(QueryString, EncodesAndSkipsEmpty) {
  EXPECT_EQ(QueryString({}), "");
  EXPECT_EQ(QueryString({{"a", ""}}), "");
  EXPECT_EQ(QueryString({{"labelSelector", "app in (x,y),role!=db"}, {"limit", "10"}}),
            "?labelSelector=app%20in%20%28x%2Cy%29%2Crole%21%3Ddb&limit=10");
}

TEST(Resource, ApiVersionAndObjectFields) {
  EXPECT_EQ(kEvents.ApiVersion(), "v1");
  EXPECT_EQ(kPeerPolicies.ApiVersion(), "tunnelmesh.io/v1alpha1");
  const nlohmann::json object = {{"metadata", {{"name", "a"}, {"namespace", "n"}}}};
  EXPECT_EQ(ObjectName(object), "a");
  EXPECT_EQ(ObjectNamespace(object), "n");
  EXPECT_EQ(ObjectName(nlohmann::json::array()), "");
  EXPECT_EQ(ObjectName(nlohmann::json{{"metadata", {{"name", 3}}}}), "");
}

}  // namespace
}  // namespace tunnelmesh::kube
