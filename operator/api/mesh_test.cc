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

// Parses `text` and returns the error message ("" when it parses).
std::string ErrorOf(const std::string& text, ManifestPolicies* policies = nullptr) {
  std::vector<MeshSpec> meshes;
  Secrets secrets;
  absl::Status s = ParseManifestText(text, "mesh.yaml", &meshes, &secrets, policies);
  if (!s.ok()) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
  return std::string(s.message());
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  text.replace(text.find(from), from.size(), to);
  return text;
}

TEST(MeshTest, UnknownFieldsAreErrorsNamingTheClosestField) {
  EXPECT_EQ(ErrorOf(Replace(kMesh, "ipv6CIDR", "ipv6CIRD")),
            "mesh.yaml: Mesh \"demo\": unknown field spec.ipv6CIRD (did you mean spec.ipv6CIDR?)");
  // A misspelt required field is named as such, not reported as missing.
  EXPECT_EQ(ErrorOf(Replace(kMesh, "ipv4CIDR", "ipv4CIRD")),
            "mesh.yaml: Mesh \"demo\": unknown field spec.ipv4CIRD (did you mean spec.ipv4CIDR?)");
  EXPECT_EQ(ErrorOf(Replace(kMesh, "  joinTokenSecretRef",
                            "  defaultActon: Allow\n  joinTokenSecretRef")),
            "mesh.yaml: Mesh \"demo\": unknown field spec.defaultActon (did you mean "
            "spec.defaultAction?)");
  EXPECT_EQ(
      ErrorOf(Replace(kMesh, "  joinTokenSecretRef", "  dns: {ttl: 5}\n  joinTokenSecretRef")),
      "mesh.yaml: Mesh \"demo\": unknown field spec.dns.ttl (spec.dns has ttlSeconds, "
      "negativeTTLSeconds)");
  EXPECT_EQ(ErrorOf(Replace(kMesh, "name: demo-join}", "name: demo-join, kee: t}")),
            "mesh.yaml: Mesh \"demo\": unknown field spec.joinTokenSecretRef.kee (did you mean "
            "spec.joinTokenSecretRef.key?)");
  EXPECT_EQ(ErrorOf(Replace(kMesh, "metadata: {name: demo}", "metadata: {name: demo, lables: {}}")),
            "mesh.yaml: Mesh \"demo\": unknown field metadata.lables (did you mean "
            "metadata.labels?)");
  EXPECT_EQ(ErrorOf(Replace(kMesh, "kind: Mesh\n", "kind: Mesh\nspce: {}\n")),
            "mesh.yaml: Mesh \"demo\": unknown field spce (did you mean spec?)");
}

TEST(MeshTest, SecretFieldsAreChecked) {
  // The review's step 34: `stringdata` used to read as a Secret without the key.
  EXPECT_EQ(ErrorOf(Replace(kMesh, "stringData:", "stringdata:")),
            "mesh.yaml: Secret \"tm/demo-join\": unknown field stringdata (did you mean "
            "stringData?)");
  EXPECT_EQ(ErrorOf(Replace(kMesh, "stringData: {token: \"a long random string\"}",
                            "stringData: [token]")),
            "mesh.yaml: Secret \"tm/demo-join\": stringData must be a mapping of key: value");
  EXPECT_EQ(
      ErrorOf(Replace(kMesh, "kind: Secret\n", "kind: Secret\ntype: Opaque\nimmutable: true\n")),
      "");
}

TEST(MeshTest, OtherKindsAreErrorsNamingTheKindsRead) {
  const std::string peer =
      "---\napiVersion: tunnelmesh.io/v1alpha1\nkind: MeshPeer\nmetadata: {name: laptop}\n"
      "spec: {mesh: demo, kind: External}\n";
  EXPECT_EQ(ErrorOf(std::string(kMesh) + peer),
            "mesh.yaml: kind MeshPeer (\"laptop\") is not read from manifests: they hold Mesh and "
            "PeerPolicy (apiVersion tunnelmesh.io/v1alpha1) and Secret (v1) objects only; move it "
            "out of the directory");
  EXPECT_NE(ErrorOf(std::string(kMesh) + "---\nkin: Mesh\n").find("a document without kind"),
            std::string::npos);
}

TEST(MeshTest, ObjectsAsTheApiServerReturnsThemParse) {
  // The reconciler passes the cluster's JSON: metadata the API server fills in, and a status.
  const std::string mesh = R"({"apiVersion": "tunnelmesh.io/v1alpha1", "kind": "Mesh",
    "metadata": {"name": "demo", "uid": "u", "resourceVersion": "7", "generation": 2,
                 "creationTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["f"],
                 "managedFields": [{"manager": "kubectl"}], "annotations": {"a": "b"}},
    "spec": {"ipv4CIDR": "10.99.0.0/16", "domain": "mesh", "defaultAction": "Deny",
             "dns": {"ttlSeconds": 5, "negativeTTLSeconds": 5}, "presharedKeyGeneration": 0,
             "joinTokenMaxMembers": 0,
             "joinTokenSecretRef": {"namespace": "tm", "name": "demo-join", "key": "token"}},
    "status": {"memberCount": 1, "conditions": []}})";
  EXPECT_EQ(ErrorOf(mesh), "");
  EXPECT_EQ(ErrorOf(R"({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
    "metadata": {"name": "demo-join", "namespace": "tm", "uid": "u", "resourceVersion": "1"},
    "data": {"token": "YWJjZGVmZ2hpamtsbW5vcHFyc3Q="}})"),
            "");
}

TEST(MeshTest, InvalidPeerPolicyIsRejectedAndTheOthersApply) {
  const std::string policies = R"(---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: typo}
spec: {mesh: demo, action: Allow, form: [{names: [a]}]}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: good}
spec: {mesh: demo, action: Allow, from: [{names: [a]}]}
)";
  std::string deep =
      "---\napiVersion: tunnelmesh.io/v1alpha1\nkind: PeerPolicy\n"
      "metadata: {name: deep}\nspec: {mesh: demo, action: Allow, from: ";
  deep += std::string(70, '[') + std::string(70, ']') + "}\n";
  ManifestPolicies parsed;
  EXPECT_EQ(ErrorOf(std::string(kMesh) + policies + deep, &parsed), "");
  ASSERT_EQ(parsed.accepted.size(), 1u);
  EXPECT_EQ(parsed.accepted[0].name, "good");
  ASSERT_EQ(parsed.rejected.size(), 2u);
  EXPECT_EQ(parsed.rejected[0],
            "mesh.yaml: PeerPolicy \"typo\": unknown field spec.form (did you mean spec.from?)");
  EXPECT_EQ(parsed.rejected[1], "mesh.yaml: PeerPolicy \"deep\": nests deeper than 64 levels");
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
