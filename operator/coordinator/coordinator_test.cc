#include "operator/coordinator/coordinator.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/tm-coord-XXXXXX";
  return mkdtemp(tmpl);
}

constexpr char kManifest[] = R"(apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  ipv4CIDR: 10.99.0.0/30
  ipv6CIDR: fd99:99::/48
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}
---
apiVersion: v1
kind: Secret
metadata: {namespace: tunnelmesh, name: demo-join}
stringData: {token: "a long random string for tests"}
)";

std::vector<MeshSpec> Meshes(const std::string& text = kManifest) {
  std::string dir = TempDir();
  FILE* f = fopen((dir + "/mesh.yaml").c_str(), "w");
  fputs(text.c_str(), f);
  fclose(f);
  auto meshes = LoadManifests(dir);
  EXPECT_TRUE(meshes.ok()) << meshes.status();
  return meshes.ok() ? *meshes : std::vector<MeshSpec>{};
}

coord::RegisterRequest Request(const PublicKey& key, const std::string& name,
                               const std::string& token = "a long random string for tests") {
  coord::RegisterRequest r;
  r.set_join_token(token);
  r.set_public_key(std::string(reinterpret_cast<const char*>(key.bytes.data()), 32));
  r.set_name(name);
  return r;
}

PublicKey NewKey() { return DerivePublicKey(SecretKey::GeneratePrivate()); }

TEST(ManifestsTest, ParsesMeshAndResolvesSecret) {
  auto meshes = Meshes();
  ASSERT_EQ(meshes.size(), 1u);
  EXPECT_EQ(meshes[0].name, "demo");
  EXPECT_EQ(meshes[0].domain, "mesh");
  EXPECT_EQ(meshes[0].join_token, "a long random string for tests");
  ASSERT_TRUE(meshes[0].ipv6_cidr.has_value());
}

TEST(ManifestsTest, ErrorsNameTheField) {
  std::vector<MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  auto s = ParseManifestText(
      "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: x}\nspec: {ipv4CIDR: "
      "10.0.0.300/16}\n",
      "m.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("spec.ipv4CIDR"), std::string::npos) << s;
  s = ParseManifestText("kind: [unclosed", "bad.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("bad.yaml"), std::string::npos);
  s = ParseManifestText(
      "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: x}\nspec: {ipv4CIDR: "
      "10.0.0.0/16, defaultAction: Maybe, joinTokenSecretRef: {namespace: a, name: b}}\n",
      "m.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("defaultAction"), std::string::npos);
}

TEST(CoordinatorTest, RegistersWithStickyAddressesAcrossRestart) {
  InitCrypto();
  std::string dir = TempDir();
  PublicKey a = NewKey();
  std::string first_ip;
  {
    auto store = *StateStore::Open(dir);
    Coordinator c(store.get(), {});
    c.SetMeshes(Meshes());
    auto r = c.Register(Request(a, "Laptop_One"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->name(), "laptop-one");
    ASSERT_EQ(r->mesh_ips_size(), 2);
    first_ip = r->mesh_ips(0);
    EXPECT_EQ(first_ip, "10.99.0.1");
    EXPECT_EQ(r->settings().preshared_key().size(), 32u);
  }
  auto store = *StateStore::Open(dir);
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  PublicKey b = NewKey();
  auto rb = c.Register(Request(b, "other"));
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->mesh_ips(0), "10.99.0.2") << "the first address stays taken";
  auto ra = c.Register(Request(a, "laptop-one"));
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->mesh_ips(0), first_ip);
  // A /30 holds two members: the third is refused with a message that says what to change.
  auto rc = c.Register(Request(NewKey(), "third"));
  ASSERT_FALSE(rc.ok());
  EXPECT_EQ(rc.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(rc.status().message()).find("widen"), std::string::npos);
}

TEST(CoordinatorTest, RejectsWrongTokenAndMalformedRequests) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  auto wrong = c.Register(Request(NewKey(), "x", "not the token"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(c.counters().rejected_tokens.load(), 1u);
  coord::RegisterRequest bad = Request(NewKey(), "x");
  bad.set_public_key("short");
  EXPECT_FALSE(c.Register(bad).ok());
  EXPECT_EQ(c.counters().malformed_requests.load(), 1u);
  EXPECT_EQ(c.member_count(), 0u);
  EXPECT_FALSE(c.Authenticate("Bearer nope").ok());
}

TEST(CoordinatorTest, WatchGetsFullMapThenDeltas) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  PublicKey a = NewKey(), b = NewKey();
  auto ra = c.Register(Request(a, "a"));
  ASSERT_TRUE(ra.ok());
  auto who = c.Authenticate("Bearer " + ra->session_token());
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(*who, a);
  auto sub = c.Watch(a);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  EXPECT_TRUE(u.full());
  EXPECT_EQ(u.upsert_peers_size(), 0);

  ASSERT_TRUE(c.Register(Request(b, "b")).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  EXPECT_FALSE(u.full());
  ASSERT_EQ(u.upsert_peers_size(), 1);
  EXPECT_EQ(u.upsert_peers(0).name(), "b");
  EXPECT_EQ(u.upsert_peers(0).allowed_ips(0), "10.99.0.2/32");
  EXPECT_EQ(u.upsert_peers(0).dns_name(), "b.mesh");

  ASSERT_TRUE(c.ReportEndpoints(b, {"192.0.2.5:51820", "[2001:db8::5]:51820"}).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.upsert_peers(0).endpoints_size(), 2);
  EXPECT_FALSE(c.ReportEndpoints(b, {"not an endpoint"}).ok());

  ASSERT_TRUE(c.CallMeMaybe(b, a, {"192.0.2.5:51820"}).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_TRUE(u.has_call_me_maybe());
  EXPECT_EQ(u.call_me_maybe().endpoints(0), "192.0.2.5:51820");

  ASSERT_TRUE(c.Leave(b).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.removed_peers_size(), 1);
  EXPECT_FALSE((*sub)->Next(&u, absl::Milliseconds(10))) << "nothing more";

  // A second watch by the same member cancels the first.
  auto again = c.Watch(a);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*sub)->cancelled());
}

}  // namespace
}  // namespace tunnelmesh
