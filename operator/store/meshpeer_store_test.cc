#include "operator/store/meshpeer_store.h"

#include "gtest/gtest.h"
#include "operator/kube/object.h"
#include "operator/kube/testing/fake_api.h"

namespace tunnelmesh {
namespace {

MemberRecord Record() {
  MemberRecord r;
  r.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
  r.mesh = "default";
  r.name = "laptop";
  r.kind = coord::MEMBER_KIND_EXTERNAL;
  r.labels = {{"role", "ci"}};
  r.static_endpoints = {"198.51.100.7:51820"};
  return r;
}

TEST(MeshPeerStoreTest, RoundTripsThroughTheObject) {
  InitCrypto();
  MemberRecord r = Record();
  nlohmann::json object = MeshPeerFor(r);
  EXPECT_EQ(object["kind"], "MeshPeer");
  EXPECT_EQ(object["spec"]["kind"], "External");
  object["status"]["meshIPs"] = {"10.99.0.7", "fd99::7", "not an address"};
  absl::StatusOr<MemberRecord> back = MeshPeerToRecord(object);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->public_key, r.public_key);
  EXPECT_EQ(back->labels, r.labels);
  EXPECT_EQ(back->static_endpoints, r.static_endpoints);
  ASSERT_EQ(back->mesh_ips.size(), 2u) << "unparsable addresses are dropped";
  EXPECT_EQ(back->mesh_ips[0].ToString(), "10.99.0.7");
}

TEST(MeshPeerStoreTest, ErrorsNameTheField) {
  InitCrypto();
  nlohmann::json object = MeshPeerFor(Record());
  object["spec"].erase("publicKey");
  EXPECT_NE(std::string(MeshPeerToRecord(object).status().message()).find("spec.publicKey"),
            std::string::npos);
  object = MeshPeerFor(Record());
  object["spec"]["publicKey"] = "AAAA";
  EXPECT_FALSE(MeshPeerToRecord(object).ok());
  object = MeshPeerFor(Record());
  object["spec"]["endpoints"] = {"example.com:51820"};
  EXPECT_NE(std::string(MeshPeerToRecord(object).status().message()).find("spec.endpoints"),
            std::string::npos);
  object = MeshPeerFor(Record());
  object["spec"]["kind"] = "Toaster";
  EXPECT_NE(std::string(MeshPeerToRecord(object).status().message()).find("spec.kind"),
            std::string::npos);
  EXPECT_FALSE(MeshPeerToRecord(nlohmann::json::array()).ok());
  EXPECT_FALSE(MeshPeerToRecord({{"metadata", 5}}).ok());
}

TEST(KubeMemberStoreTest, PutWritesSpecAndStatusRemoveDeletes) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  MemberRecord r = Record();
  r.mesh_ips = {*IpAddress::Parse("10.99.0.9")};
  ASSERT_TRUE(store.Put(r).ok());
  absl::StatusOr<nlohmann::json> object = api.Get(kube::kMeshPeers, "", "laptop");
  ASSERT_TRUE(object.ok());
  EXPECT_EQ((*object)["status"]["meshIPs"], nlohmann::json({"10.99.0.9"}));
  EXPECT_EQ((*object)["metadata"]["labels"]["role"], "ci");
  // A label dropped and the name changed: the old object goes, the new one has no such label.
  MemberRecord renamed = r;
  renamed.name = "laptop-2";
  renamed.labels.clear();
  ASSERT_TRUE(store.Put(renamed).ok());
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", "laptop").status()));
  absl::StatusOr<nlohmann::json> second = api.Get(kube::kMeshPeers, "", "laptop-2");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE((*second)["metadata"]["labels"].empty());
  // A name that belongs to another key is refused.
  MemberRecord other = Record();
  other.name = "laptop-2";
  EXPECT_TRUE(absl::IsAlreadyExists(store.Put(other)));
  ASSERT_TRUE(store.Remove(renamed.public_key).ok());
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", "laptop-2").status()));
  EXPECT_TRUE(store.members().empty());
}

// The quarantine lives in the keys Secret beside the coordinator's own keys, which it leaves
// alone; a restarted store reads it back without the expired entries.
TEST(KubeMemberStoreTest, TheQuarantineIsKeptInTheKeysSecret) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore first(&api, {"tunnelmesh", "tunnelmesh-coordinator"});
  ASSERT_TRUE(first.LoadQuarantine().ok()) << "no Secret yet: nothing quarantined";
  EXPECT_TRUE(first.quarantine().empty());
  ASSERT_TRUE(api.Create(kube::kSecrets, "tunnelmesh",
                         {{"metadata", {{"name", "tunnelmesh-coordinator"}}},
                          {"data", {{"relay.key", "a2V5"}}}})
                  .ok());
  const PublicKey bob = DerivePublicKey(SecretKey::GeneratePrivate());
  const absl::Time now = absl::Now();
  std::vector<QuarantineEntry> entries = {
      {*IpAddress::Parse("10.99.0.7"), bob, "bob", now + absl::Hours(24)},
      {*IpAddress::Parse("10.99.0.8"), bob, "old", now - absl::Seconds(1)}};
  ASSERT_TRUE(first.SaveQuarantine(entries).ok());
  absl::StatusOr<nlohmann::json> secret =
      api.Get(kube::kSecrets, "tunnelmesh", "tunnelmesh-coordinator");
  ASSERT_TRUE(secret.ok());
  EXPECT_EQ((*secret)["data"]["relay.key"], "a2V5");
  EXPECT_TRUE((*secret)["data"].contains(KubeMemberStore::kQuarantineKey));

  KubeMemberStore restarted(&api, {"tunnelmesh", "tunnelmesh-coordinator"});
  ASSERT_TRUE(restarted.LoadQuarantine().ok());
  ASSERT_EQ(restarted.quarantine().size(), 1u);
  EXPECT_EQ(restarted.quarantine()[0].key, bob);
  EXPECT_EQ(restarted.quarantine()[0].name, "bob");
  EXPECT_EQ(restarted.quarantine()[0].ip.ToString(), "10.99.0.7");

  (*secret)["data"][KubeMemberStore::kQuarantineKey] = "!!";
  ASSERT_TRUE(api.Update(kube::kSecrets, "tunnelmesh", *secret).ok());
  absl::Status corrupt = restarted.LoadQuarantine();
  EXPECT_EQ(corrupt.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(corrupt.message()).find("tunnelmesh-coordinator"), std::string::npos);
}

TEST(KubeMemberStoreTest, UpdateNeverCreates) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  MemberRecord r = Record();
  absl::Status s = store.Update(r);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("MeshPeer laptop was deleted"), std::string::npos) << s;
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", "laptop").status()));
  EXPECT_TRUE(store.members().empty());
  // An existing object is updated; a rename of a deleted one is not created either.
  ASSERT_TRUE(api.Create(kube::kMeshPeers, "", MeshPeerFor(r)).ok());
  r.mesh_ips = {*IpAddress::Parse("10.99.0.9")};
  ASSERT_TRUE(store.Update(r).ok());
  EXPECT_EQ((*api.Get(kube::kMeshPeers, "", "laptop"))["status"]["meshIPs"],
            nlohmann::json({"10.99.0.9"}));
  ASSERT_TRUE(api.Delete(kube::kMeshPeers, "", "laptop").ok());
  MemberRecord renamed = r;
  renamed.name = "laptop-2";
  EXPECT_TRUE(absl::IsNotFound(store.Update(renamed)));
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", "laptop-2").status()));
}

TEST(KubeMemberStoreTest, ApiErrorsNameTheObjectAndKeepMemory) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  api.FailNext("create", "meshpeers", absl::UnavailableError("injected"));
  absl::Status s = store.Put(Record());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("MeshPeer laptop"), std::string::npos);
  EXPECT_TRUE(store.members().empty());
}

}  // namespace
}  // namespace tunnelmesh
