// LoadOrCreateIdentity over the fake API server: the keys Secret and the CA ConfigMap on a first
// start, the same identity from the Secret in a fresh pod, and entries of other writers (the
// meshes' preshared keys, psk.<mesh>) kept when it rewrites the Secret.
#include "operator/reconcilers/coordinator_identity.h"

#include <stdlib.h>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "operator/kube/testing/fake_api.h"

namespace tunnelmesh {
namespace {

using kube::testing::FakeApi;

std::string FreshDir() {
  char tmpl[] = "/tmp/tm-identity-XXXXXX";
  return mkdtemp(tmpl);
}

IdentityOptions Options(const std::string& state_dir) {
  return {.ns = "tm", .secret_name = "keys", .configmap_name = "ca", .state_dir = state_dir};
}

nlohmann::json SecretData(FakeApi& api) {
  absl::StatusOr<nlohmann::json> secret = api.Get(kube::kSecrets, "tm", "keys");
  EXPECT_TRUE(secret.ok()) << secret.status();
  return secret.ok() ? secret->value("data", nlohmann::json::object()) : nlohmann::json();
}

class CoordinatorIdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }
  FakeApi api_;
};

TEST_F(CoordinatorIdentityTest, FirstStartCreatesTheSecretAndPublishesTheCa) {
  absl::StatusOr<CoordinatorIdentity> identity = LoadOrCreateIdentity(&api_, Options(FreshDir()));
  ASSERT_TRUE(identity.ok()) << identity.status();
  const nlohmann::json data = SecretData(api_);
  for (const char* key : {"ca.crt", "ca.key", "server.crt", "server.key", "relay.key"}) {
    EXPECT_TRUE(data.contains(key)) << key;
  }
  absl::StatusOr<nlohmann::json> configmap = api_.Get(kube::kConfigMaps, "tm", "ca");
  ASSERT_TRUE(configmap.ok()) << configmap.status();
  EXPECT_EQ((*configmap)["data"]["ca-hash"], identity->ca_hash);

  // A new pod (empty scratch directory) gets the same identity and writes nothing.
  const int updates = api_.CallCount("update", "secrets");
  absl::StatusOr<CoordinatorIdentity> again = LoadOrCreateIdentity(&api_, Options(FreshDir()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ca_hash, identity->ca_hash);
  EXPECT_TRUE(again->relay_key == identity->relay_key);
  EXPECT_EQ(api_.CallCount("update", "secrets"), updates);
}

// Issue 11: the preshared keys share this Secret. A rewrite of the Secret (here: relay.key is
// missing, as in a Secret from before the relay key existed) must keep them, or a crash before
// anyone wrote them back would give every mesh a new key and cut every tunnel.
TEST_F(CoordinatorIdentityTest, RewritingTheSecretKeepsEntriesItDoesNotOwn) {
  ASSERT_TRUE(LoadOrCreateIdentity(&api_, Options(FreshDir())).ok());
  absl::StatusOr<nlohmann::json> secret = api_.Get(kube::kSecrets, "tm", "keys");
  ASSERT_TRUE(secret.ok());
  const std::string psk = absl::Base64Escape(R"({"generation":3,"key":"x","step":"stable"})");
  (*secret)["data"].erase("relay.key");
  (*secret)["data"]["psk.demo"] = psk;
  (*secret)["data"]["psk.other"] = psk;
  (*secret)["data"]["note"] = absl::Base64Escape("an admin's entry");
  ASSERT_TRUE(api_.Update(kube::kSecrets, "tm", *secret).ok());

  const int updates = api_.CallCount("update", "secrets");
  absl::StatusOr<CoordinatorIdentity> identity = LoadOrCreateIdentity(&api_, Options(FreshDir()));
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(api_.CallCount("update", "secrets"), updates + 1) << "relay.key was written";
  const nlohmann::json data = SecretData(api_);
  EXPECT_TRUE(data.contains("relay.key"));
  EXPECT_EQ(data.value("psk.demo", ""), psk);
  EXPECT_EQ(data.value("psk.other", ""), psk);
  EXPECT_EQ(data.value("note", ""), absl::Base64Escape("an admin's entry"));
}

TEST_F(CoordinatorIdentityTest, DamagedEntryIsAnErrorNamingIt) {
  ASSERT_TRUE(LoadOrCreateIdentity(&api_, Options(FreshDir())).ok());
  absl::StatusOr<nlohmann::json> secret = api_.Get(kube::kSecrets, "tm", "keys");
  ASSERT_TRUE(secret.ok());
  (*secret)["data"]["ca.key"] = "not base64!";
  ASSERT_TRUE(api_.Update(kube::kSecrets, "tm", *secret).ok());
  absl::StatusOr<CoordinatorIdentity> identity = LoadOrCreateIdentity(&api_, Options(FreshDir()));
  ASSERT_FALSE(identity.ok());
  EXPECT_EQ(identity.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(identity.status().message().find("Secret tm/keys: data.ca.key"), std::string::npos)
      << identity.status();
}

}  // namespace
}  // namespace tunnelmesh
