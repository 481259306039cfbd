#include "operator/api/mesh.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

constexpr char kMesh[] = R"(apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  ipv4CIDR: 10.99.0.0/16
  ipv6CIDR: fd99:99::/48
  joinTokenSecretRef: {namespace: tm, name: demo-join}
---
apiVersion: v1
kind: Secret
metadata: {namespace: tm, name: demo-join}
stringData: {token: "a long random string"}
)";

using Secrets = std::map<std::string, std::map<std::string, std::string>>;

TEST(MeshTest, ParsesMeshAndSecret) {
  std::vector<MeshSpec> meshes;
  Secrets secrets;
  ASSERT_TRUE(ParseManifestText(kMesh, "f.yaml", &meshes, &secrets).ok());
  ASSERT_EQ(meshes.size(), 1u);
  EXPECT_EQ(meshes[0].name, "demo");
  EXPECT_EQ(meshes[0].ipv4_cidr.ToString(), "10.99.0.0/16");
  ASSERT_TRUE(meshes[0].ipv6_cidr.has_value());
  EXPECT_EQ(meshes[0].domain, "mesh");
  EXPECT_EQ(meshes[0].default_action, "Deny");
  EXPECT_EQ(meshes[0].dns_ttl_seconds, 5u);
  EXPECT_EQ(meshes[0].dns_negative_ttl_seconds, 5u);
  ASSERT_TRUE(SetJoinToken(&meshes[0], secrets["tm/demo-join"]).ok());
  EXPECT_EQ(meshes[0].join_token, "a long random string");
}

TEST(MeshTest, ParsesDnsTtls) {
  std::string text = kMesh;
  const std::string anchor = "  joinTokenSecretRef";
  text.insert(text.find(anchor), "  dns: {ttlSeconds: 30, negativeTTLSeconds: 0}\n");
  std::vector<MeshSpec> meshes;
  Secrets secrets;
  ASSERT_TRUE(ParseManifestText(text, "f.yaml", &meshes, &secrets).ok());
  EXPECT_EQ(meshes[0].dns_ttl_seconds, 30u);
  EXPECT_EQ(meshes[0].dns_negative_ttl_seconds, 0u);
}

TEST(MeshTest, ParsesPresharedKeyGeneration) {
  std::vector<MeshSpec> meshes;
  Secrets secrets;
  ASSERT_TRUE(ParseManifestText(kMesh, "f.yaml", &meshes, &secrets).ok());
  EXPECT_EQ(meshes[0].preshared_key_generation, 0u) << "default";
  std::string text = kMesh;
  const std::string anchor = "  joinTokenSecretRef";
  text.insert(text.find(anchor), "  presharedKeyGeneration: 3\n");
  meshes.clear();
  ASSERT_TRUE(ParseManifestText(text, "f.yaml", &meshes, &secrets).ok());
  EXPECT_EQ(meshes[0].preshared_key_generation, 3u);
}

TEST(MeshTest, ParsesJoinTokenMaxMembers) {
  std::vector<MeshSpec> meshes;
  Secrets secrets;
  ASSERT_TRUE(ParseManifestText(kMesh, "f.yaml", &meshes, &secrets).ok());
  EXPECT_EQ(meshes[0].join_token_max_members, 0u) << "default: no cap";
  std::string text = kMesh;
  const std::string anchor = "  joinTokenSecretRef";
  text.insert(text.find(anchor), "  joinTokenMaxMembers: 25\n");
  meshes.clear();
  ASSERT_TRUE(ParseManifestText(text, "f.yaml", &meshes, &secrets).ok());
  EXPECT_EQ(meshes[0].join_token_max_members, 25u);
}

TEST(MeshTest, ErrorsNameTheField) {
  struct Case {
    std::string from, to, field;
  };
  for (const Case& c : std::vector<Case>{
           {"10.99.0.0/16", "10.99.0.0/31", "spec.ipv4CIDR"},
           {"10.99.0.0/16", "fd00::/64", "spec.ipv4CIDR"},
           {"fd99:99::/48", "10.0.0.0/8", "spec.ipv6CIDR"},
           {"name: demo", "name: Demo_1", "metadata.name"},
           {"name: demo-join}", "}", "joinTokenSecretRef"},
           {"  joinTokenSecretRef", "  dns: {ttlSeconds: -1}\n  joinTokenSecretRef",
            "spec.dns.ttlSeconds"},
           {"  joinTokenSecretRef", "  dns: {negativeTTLSeconds: 86401}\n  joinTokenSecretRef",
            "spec.dns.negativeTTLSeconds"},
           {"  joinTokenSecretRef", "  dns: 5\n  joinTokenSecretRef", "spec.dns"},
           {"  joinTokenSecretRef", "  presharedKeyGeneration: -1\n  joinTokenSecretRef",
            "spec.presharedKeyGeneration"},
           {"  joinTokenSecretRef", "  presharedKeyGeneration: two\n  joinTokenSecretRef",
            "spec.presharedKeyGeneration"},
           {"  joinTokenSecretRef", "  presharedKeyGeneration: 1.5\n  joinTokenSecretRef",
            "spec.presharedKeyGeneration"},
           {"  joinTokenSecretRef", "  presharedKeyGeneration: [1]\n  joinTokenSecretRef",
            "spec.presharedKeyGeneration"},
           {"  joinTokenSecretRef", "  presharedKeyGeneration: ''\n  joinTokenSecretRef",
            "spec.presharedKeyGeneration"},
           {"  joinTokenSecretRef", "  joinTokenMaxMembers: -3\n  joinTokenSecretRef",
            "spec.joinTokenMaxMembers"},
           {"  joinTokenSecretRef", "  joinTokenMaxMembers: 1000001\n  joinTokenSecretRef",
            "spec.joinTokenMaxMembers"},
           {"  joinTokenSecretRef", "  joinTokenMaxMembers: {n: 1}\n  joinTokenSecretRef",
            "spec.joinTokenMaxMembers"},
           {"  joinTokenSecretRef", "  joinTokenMaxMembers: ten\n  joinTokenSecretRef",
            "spec.joinTokenMaxMembers"}}) {
    std::string text = kMesh;
    text.replace(text.find(c.from), c.from.size(), c.to);
    std::vector<MeshSpec> meshes;
    Secrets secrets;
    absl::Status s = ParseManifestText(text, "f.yaml", &meshes, &secrets);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.to;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s;
  }
  MeshSpec mesh;
  mesh.name = "demo";
  mesh.join_token_ref = {"tm", "demo-join", "token"};
  absl::Status short_token = SetJoinToken(&mesh, {{"token", "short"}});
  EXPECT_NE(short_token.message().find("at least 16"), std::string::npos);
}

}  // namespace
}  // namespace tunnelmesh
