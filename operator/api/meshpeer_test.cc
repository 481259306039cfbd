#include "operator/api/meshpeer.h"

#include "gtest/gtest.h"
#include "operator/api/mesh.h"

namespace tunnelmesh {
namespace {

MeshPeer Peer() {
  MeshPeer p;
  p.name = "laptop";
  p.labels = {{"role", "ci"}};
  p.mesh = "default";
  p.kind = coord::MEMBER_KIND_POD;
  p.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
  p.endpoints = {"198.51.100.7:51820"};
  p.aliases = {"git", "ci-cache"};
  return p;
}

TEST(MeshPeerTest, RoundTrips) {
  InitCrypto();
  MeshPeer p = Peer();
  nlohmann::json object = MeshPeerObject(p);
  EXPECT_EQ(object["spec"]["kind"], "Pod");
  object["status"]["meshIPs"] = {"10.99.0.7", 5, "nope"};
  absl::StatusOr<MeshPeer> back = ParseMeshPeer(object);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->mesh_ips.size(), 1u);
  EXPECT_EQ(MeshIpsJson(back->mesh_ips), nlohmann::json({"10.99.0.7"}));
  back->mesh_ips.clear();
  EXPECT_EQ(*back, p);
}

TEST(MeshPeerTest, ErrorsNameTheField) {
  InitCrypto();
  nlohmann::json object = MeshPeerObject(Peer());
  object["spec"]["kind"] = "Toaster";
  EXPECT_NE(ParseMeshPeer(object).status().message().find("spec.kind"), std::string::npos);
  object = MeshPeerObject(Peer());
  object["spec"]["publicKey"] = std::string(44, 'A');
  EXPECT_NE(ParseMeshPeer(object).status().message().find("spec.publicKey"), std::string::npos);
  object = MeshPeerObject(Peer());
  object["spec"]["endpoints"] = {7};
  EXPECT_NE(ParseMeshPeer(object).status().message().find("spec.endpoints"), std::string::npos);
  for (const nlohmann::json& aliases :
       {nlohmann::json{"Git"}, nlohmann::json{"a.b"}, nlohmann::json{3},
        nlohmann::json(std::vector<std::string>(kMaxAliases + 1, "x"))}) {
    object = MeshPeerObject(Peer());
    object["spec"]["aliases"] = aliases;
    EXPECT_NE(ParseMeshPeer(object).status().message().find("spec.aliases"), std::string::npos)
        << aliases;
  }
  object = MeshPeerObject(Peer());
  object["status"] = "x";
  EXPECT_FALSE(ParseMeshPeer(object).ok());
}

}  // namespace
}  // namespace tunnelmesh
