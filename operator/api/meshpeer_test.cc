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
  p.exit_peer = true;
  p.use_exit_peers = {"home", "office"};
  p.ssh_key = DerivePublicKey(SecretKey::GeneratePrivate());
  p.ssh_port = 7722;
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

TEST(MeshPeerTest, ExitAndSshFields) {
  InitCrypto();
  nlohmann::json object = MeshPeerObject(Peer());
  EXPECT_EQ(object["spec"]["useExitPeer"], nlohmann::json({"home", "office"}));
  object["spec"]["useExitPeer"] = "home";
  absl::StatusOr<MeshPeer> one = ParseMeshPeer(object);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->use_exit_peers, std::vector<std::string>{"home"}) << "one name is a list of one";
  const std::pair<const char*, nlohmann::json> bad[] = {
      {"useExitPeer", nlohmann::json({"home", "home"})},
      {"useExitPeer", nlohmann::json({"Home Exit"})},
      {"useExitPeer", nlohmann::json(7)},
      {"exitPeer", nlohmann::json("yes")},
      {"sshPort", nlohmann::json(70000)},
      {"sshPublicKey", nlohmann::json("not base64")},
  };
  for (const auto& [field, value] : bad) {
    object = MeshPeerObject(Peer());
    object["spec"][field] = value;
    absl::StatusOr<MeshPeer> parsed = ParseMeshPeer(object);
    ASSERT_FALSE(parsed.ok()) << field << "=" << value.dump();
    EXPECT_NE(parsed.status().message().find(std::string("spec.") + field), std::string::npos)
        << parsed.status();
  }
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
