// The fields the parser knows against the CRD schemas in crds/ (read from the source tree, the
// path given by CMake as TM_CRD_DIR): a field added to a schema but not to the parser would be
// refused in manifests, and one the parser knows but the schema lacks would be pruned by the API
// server. Also the unknown-field check itself.
#include "operator/api/known_fields.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"
#include "lib/base/file.h"
#include "yaml-cpp/yaml.h"

namespace tunnelmesh {
namespace {

// The paths of every property under `schema` (an openAPIV3Schema node), as KnownFieldPaths
// writes them: "spec.from[].ipBlock.cidr".
void SchemaPaths(const YAML::Node& schema, const std::string& path, std::set<std::string>* out) {
  const YAML::Node properties = schema["properties"];
  if (!properties || !properties.IsMap()) return;
  for (const auto& kv : properties) {
    const std::string child = path + "." + kv.first.as<std::string>();
    out->insert(child);
    const YAML::Node type = kv.second["type"];
    if (type && type.as<std::string>() == "array") {
      if (const YAML::Node items = kv.second["items"]; items) SchemaPaths(items, child + "[]", out);
    } else {
      SchemaPaths(kv.second, child, out);
    }
  }
}

std::set<std::string> CrdSpecPaths(const std::string& file) {
  absl::StatusOr<std::string> text = ReadFile(std::string(TM_CRD_DIR) + "/" + file);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return {};
  const YAML::Node crd = YAML::Load(*text);
  std::set<std::string> out;
  for (const YAML::Node& version : crd["spec"]["versions"]) {
    const YAML::Node spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    SchemaPaths(spec, "spec", &out);
  }
  return out;
}

std::set<std::string> ParserSpecPaths(std::span<const KnownField> fields) {
  std::set<std::string> out;
  for (const std::string& path : KnownFieldPaths(fields)) {
    if (path.rfind("spec.", 0) == 0) out.insert(path);
  }
  return out;
}

TEST(KnownFieldsTest, MeshMatchesItsCrd) {
  const std::set<std::string> crd = CrdSpecPaths("mesh.yaml");
  EXPECT_TRUE(crd.count("spec.joinTokenSecretRef.key")) << "the schema walk finds nested fields";
  EXPECT_TRUE(crd.count("spec.joinTokenMaxMembers"));
  EXPECT_EQ(ParserSpecPaths(MeshObjectFields()), crd);
}

TEST(KnownFieldsTest, PeerPolicyMatchesItsCrd) {
  const std::set<std::string> crd = CrdSpecPaths("peerpolicy.yaml");
  EXPECT_TRUE(crd.count("spec.to[].podSelector.matchExpressions[].values"))
      << "the schema walk follows lists and YAML aliases";
  EXPECT_EQ(ParserSpecPaths(PeerPolicyObjectFields()), crd);
}

TEST(KnownFieldsTest, UnknownFieldNamesThePathAndTheClosestField) {
  const nlohmann::json mesh = {{"apiVersion", "tunnelmesh.io/v1alpha1"},
                               {"kind", "Mesh"},
                               {"metadata", {{"name", "demo"}}},
                               {"spec", {{"ipv6CIRD", "fd99::/48"}}}};
  EXPECT_EQ(CheckKnownFields(mesh, MeshObjectFields()).message(),
            "unknown field spec.ipv6CIRD (did you mean spec.ipv6CIDR?)");
  nlohmann::json nested = mesh;
  nested["spec"] = {{"joinTokenSecretRef", {{"nmespace", "tm"}}}};
  EXPECT_EQ(CheckKnownFields(nested, MeshObjectFields()).message(),
            "unknown field spec.joinTokenSecretRef.nmespace (did you mean "
            "spec.joinTokenSecretRef.namespace?)");
  nested["spec"] = {{"dns", {{"negativeTtlSeconds", 5}}}};
  EXPECT_EQ(
      CheckKnownFields(nested, MeshObjectFields()).message(),
      "unknown field spec.dns.negativeTtlSeconds (did you mean spec.dns.negativeTTLSeconds?)");
  // Nothing close: the fields of that level are listed.
  nested["spec"] = {{"colour", "blue"}};
  EXPECT_EQ(CheckKnownFields(nested, MeshObjectFields()).message(),
            "unknown field spec.colour (spec has ipv4CIDR, ipv6CIDR, domain, defaultAction, dns, "
            "joinTokenSecretRef, presharedKeyGeneration, joinTokenMaxMembers)");
  nested = mesh;
  nested.erase("spec");
  nested["Spec"] = nlohmann::json::object();
  EXPECT_EQ(CheckKnownFields(nested, MeshObjectFields()).message(),
            "unknown field Spec (did you mean spec?)");
}

TEST(KnownFieldsTest, ListItemsAreCheckedWithTheirIndex) {
  const nlohmann::json policy = {
      {"spec",
       {{"mesh", "m"},
        {"from", {{{"names", {"a"}}}, {{"peerSelector", {{"matchLabel", {{"a", "b"}}}}}}}}}}};
  EXPECT_EQ(CheckKnownFields(policy, PeerPolicyObjectFields()).message(),
            "unknown field spec.from[1].peerSelector.matchLabel (did you mean "
            "spec.from[1].peerSelector.matchLabels?)");
}

TEST(KnownFieldsTest, ObjectsFromTheApiServerPass) {
  // What GET returns for a Mesh, with the metadata the API server adds and a status.
  const nlohmann::json mesh = nlohmann::json::parse(R"({
    "apiVersion": "tunnelmesh.io/v1alpha1", "kind": "Mesh",
    "metadata": {"name": "demo", "uid": "1b3c", "resourceVersion": "42", "generation": 3,
                 "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"anyKey": "x"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "finalizers": ["tunnelmesh.io/mesh"],
                 "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
    "spec": {"ipv4CIDR": "10.99.0.0/16", "dns": {"ttlSeconds": 5},
             "joinTokenSecretRef": {"namespace": "tm", "name": "j", "key": "token"}},
    "status": {"memberCount": 2, "anything": true}})");
  EXPECT_TRUE(CheckKnownFields(mesh, MeshObjectFields()).ok());
  const nlohmann::json secret = nlohmann::json::parse(R"({
    "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": false,
    "metadata": {"name": "j", "namespace": "tm", "ownerReferences": []},
    "data": {"token": "YWJj"}, "stringData": {"other": "x"}})");
  EXPECT_TRUE(CheckKnownFields(secret, SecretObjectFields()).ok());
  EXPECT_EQ(CheckKnownFields({{"stringdata", {{"token", "x"}}}}, SecretObjectFields()).message(),
            "unknown field stringdata (did you mean stringData?)");
  EXPECT_EQ(CheckKnownFields({{"metadata", {{"nme", "x"}}}}, SecretObjectFields()).message(),
            "unknown field metadata.nme (did you mean metadata.name?)");
}

TEST(KnownFieldsTest, ClosestFieldNeedsToBeClose) {
  const KnownField fields[] = {{"ipv4CIDR"}, {"ipv6CIDR"}, {"defaultAction"}, {"key"}};
  EXPECT_EQ(ClosestField("defaultActon", fields), "defaultAction");
  EXPECT_EQ(ClosestField("IPV4cidr", fields), "ipv4CIDR");
  EXPECT_EQ(ClosestField("kye", fields), "key");
  EXPECT_EQ(ClosestField("action", fields), "");
  EXPECT_EQ(ClosestField("", fields), "");
  EXPECT_EQ(ClosestField(std::string(1000, 'k'), fields), "");
}

}  // namespace
}  // namespace tunnelmesh
