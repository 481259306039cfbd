// SecretPresharedKeyStore over the fake API server: loads, round trips, damaged entries, conflicts
// on update, and a Coordinator that keeps its meshes' keys in the Secret across a restart (with
// LoadOrCreateIdentity rewriting the same Secret in between, as every start does).
#include "operator/reconcilers/psk_secret_store.h"

#include <stdlib.h>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"
#include "operator/kube/testing/fake_api.h"
#include "operator/reconcilers/coordinator_identity.h"

namespace tunnelmesh {
namespace {

using kube::testing::FakeApi;

MeshPresharedKey Record(uint64_t generation) {
  MeshPresharedKey record;
  record.generation = generation;
  record.key = SecretKey::Random();
  return record;
}

MeshPresharedKey Rolling(uint64_t generation) {
  MeshPresharedKey record = Record(generation);
  record.previous = SecretKey::Random();
  record.previous_generation = generation - 1;
  record.step = PresharedKeyStep::kAcceptNew;
  return record;
}

class SecretPresharedKeyStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }

  void CreateSecret(nlohmann::json data) {
    ASSERT_TRUE(api_.Create(kube::kSecrets, "tm",
                            {{"apiVersion", "v1"},
                             {"kind", "Secret"},
                             {"metadata", {{"namespace", "tm"}, {"name", "keys"}}},
                             {"data", std::move(data)}})
                    .ok());
  }
  nlohmann::json Data() {
    absl::StatusOr<nlohmann::json> secret = api_.Get(kube::kSecrets, "tm", "keys");
    EXPECT_TRUE(secret.ok()) << secret.status();
    return secret.ok() ? secret->value("data", nlohmann::json::object()) : nlohmann::json();
  }
  void SetEntry(const std::string& key, const std::string& value) {
    absl::StatusOr<nlohmann::json> secret = api_.Get(kube::kSecrets, "tm", "keys");
    ASSERT_TRUE(secret.ok());
    (*secret)["data"][key] = value;
    ASSERT_TRUE(api_.Update(kube::kSecrets, "tm", *secret).ok());
  }

  FakeApi api_;
  SecretPresharedKeyStore store_{&api_, "tm", "keys"};
};

TEST_F(SecretPresharedKeyStoreTest, NothingToLoadBeforeTheFirstSave) {
  absl::StatusOr<PresharedKeyRecords> none = store_.Load();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty()) << "no Secret yet";
  CreateSecret({{"ca.crt", absl::Base64Escape("pem")}});
  none = store_.Load();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty()) << "a Secret without psk.* entries";
}

TEST_F(SecretPresharedKeyStoreTest, SaveThenLoadRoundTripsAndKeepsOtherEntries) {
  CreateSecret({{"ca.crt", absl::Base64Escape("pem")}});
  PresharedKeyRecords records;
  records.emplace("demo", Record(2));
  records.emplace("other", Rolling(5));
  ASSERT_TRUE(store_.Save(records).ok());
  const nlohmann::json data = Data();
  EXPECT_EQ(data.value("ca.crt", ""), absl::Base64Escape("pem"));
  EXPECT_TRUE(data.contains("psk.demo"));
  EXPECT_TRUE(data.contains("psk.other"));

  absl::StatusOr<PresharedKeyRecords> loaded = store_.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_TRUE(loaded->at("demo") == records.at("demo"));
  EXPECT_TRUE(loaded->at("other") == records.at("other"));

  // The same records again: no write. Fewer records: the Secret holds exactly those.
  const int updates = api_.CallCount("update", "secrets");
  ASSERT_TRUE(store_.Save(records).ok());
  EXPECT_EQ(api_.CallCount("update", "secrets"), updates);
  records.erase("other");
  ASSERT_TRUE(store_.Save(records).ok());
  EXPECT_FALSE(Data().contains("psk.other"));
  EXPECT_TRUE(Data().contains("ca.crt"));
}

TEST_F(SecretPresharedKeyStoreTest, DamagedEntriesAreErrorsNamingTheSecretAndEntry) {
  CreateSecret({{"ca.crt", absl::Base64Escape("pem")}});
  for (const std::string& value :
       {std::string("not base64!"), absl::Base64Escape("not json"),
        absl::Base64Escape(R"({"generation": 1, "key": "short"})"),
        absl::Base64Escape(R"({"generation": 1, "step": "sideways", "key": ")" +
                           SecretKey::Random().ToBase64() + "\"}")}) {
    SetEntry("psk.demo", value);
    absl::StatusOr<PresharedKeyRecords> loaded = store_.Load();
    ASSERT_FALSE(loaded.ok()) << value;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(loaded.status().message().find("Secret tm/keys data.psk.demo"), std::string::npos)
        << loaded.status();
  }
}

TEST_F(SecretPresharedKeyStoreTest, ConflictsAreReadAgainThenReported) {
  CreateSecret({{"ca.crt", absl::Base64Escape("pem")}});
  PresharedKeyRecords records;
  records.emplace("demo", Record(0));
  // Another writer changed the Secret between our read and our update, once: read it again.
  api_.FailNext("update", "secrets", absl::AbortedError("409 Conflict"), 1);
  ASSERT_TRUE(store_.Save(records).ok());
  EXPECT_EQ(api_.CallCount("update", "secrets"), 2);
  absl::StatusOr<PresharedKeyRecords> loaded = store_.Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->at("demo") == records.at("demo"));

  // Conflicts every time: reported, after a bounded number of tries.
  api_.ClearCalls();
  records["demo"] = Record(1);
  api_.FailNext("update", "secrets", absl::AbortedError("409 Conflict"),
                SecretPresharedKeyStore::kUpdateAttempts);
  absl::Status saved = store_.Save(records);
  EXPECT_EQ(saved.code(), absl::StatusCode::kAborted);
  EXPECT_NE(saved.message().find("saving the meshes' preshared keys in Secret tm/keys"),
            std::string::npos)
      << saved;
  EXPECT_EQ(api_.CallCount("update", "secrets"), SecretPresharedKeyStore::kUpdateAttempts);

  // Other errors are not retried here (the coordinator retries at its next tick).
  api_.ClearCalls();
  api_.FailNext("update", "secrets", absl::UnavailableError("503"), 1);
  EXPECT_EQ(store_.Save(records).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(api_.CallCount("update", "secrets"), 1);
  EXPECT_TRUE(store_.Save(records).ok());
}

TEST_F(SecretPresharedKeyStoreTest, MissingSecretOnSaveNamesIt) {
  PresharedKeyRecords records;
  records.emplace("demo", Record(0));
  absl::Status saved = store_.Save(records);
  EXPECT_EQ(saved.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(saved.message().find("Secret tm/keys"), std::string::npos) << saved;
}

// What kube_mode.cc does at every start: LoadOrCreateIdentity, then a Coordinator whose keys live
// in the Secret. A restart keeps each mesh's key; a raised generation rolls it.
TEST_F(SecretPresharedKeyStoreTest, CoordinatorKeepsItsKeysAcrossARestart) {
  const IdentityOptions identity{
      .ns = "tm", .secret_name = "keys", .configmap_name = "ca", .state_dir = TempDir()};
  ASSERT_TRUE(LoadOrCreateIdentity(&api_, identity).ok());
  auto start = [this](FakeMemberStore* members) {
    Coordinator::Options options;
    options.psk_store = &store_;
    options.psk_tick_interval = absl::ZeroDuration();
    return std::make_unique<Coordinator>(members, std::move(options));
  };
  std::vector<MeshSpec> meshes = Meshes(MeshManifest(24));
  FakeMemberStore members;
  std::string saved_record;
  {
    auto coordinator = start(&members);
    coordinator->SetMeshes(meshes);
    saved_record = Data().value("psk.demo", "");
    ASSERT_FALSE(saved_record.empty()) << "the new mesh's key is in the Secret";
  }
  // The next start, in a new pod: the identity is read again (and the Secret rewritten when it
  // lacks an entry of its own), then the coordinator loads its keys.
  {
    absl::StatusOr<nlohmann::json> secret = api_.Get(kube::kSecrets, "tm", "keys");
    ASSERT_TRUE(secret.ok());
    (*secret)["data"].erase("relay.key");
    ASSERT_TRUE(api_.Update(kube::kSecrets, "tm", *secret).ok());
  }
  IdentityOptions fresh = identity;
  fresh.state_dir = TempDir();
  ASSERT_TRUE(LoadOrCreateIdentity(&api_, fresh).ok());
  EXPECT_EQ(Data().value("psk.demo", ""), saved_record) << "the identity kept the key";
  auto coordinator = start(&members);
  coordinator->SetMeshes(meshes);
  EXPECT_EQ(Data().value("psk.demo", ""), saved_record) << "the same key after the restart";

  meshes[0].preshared_key_generation = 1;
  coordinator->SetMeshes(meshes);
  EXPECT_EQ(coordinator->PresharedKeyStepOf("demo"), PresharedKeyStep::kAcceptNew);
  absl::StatusOr<PresharedKeyRecords> loaded = store_.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->at("demo").generation, 1u);
  EXPECT_EQ(loaded->at("demo").step, PresharedKeyStep::kAcceptNew);
}

}  // namespace
}  // namespace tunnelmesh
