#include "operator/reconcilers/meshpeer_store.h"

#include "gtest/gtest.h"

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

}  // namespace
}  // namespace tunnelmesh
