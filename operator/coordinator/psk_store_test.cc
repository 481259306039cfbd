// The meshes' preshared keys: their store, and the coordinator's rollover (docs/protocol.md,
// "Preshared key").
#include "operator/coordinator/psk_store.h"

#include <sys/stat.h>

#include "gtest/gtest.h"
#include "lib/base/file.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"
#include "operator/coordinator/testing/fake_psk_store.h"

namespace tunnelmesh {
namespace {

int ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return static_cast<int>(st.st_mode & 0777);
}

std::string Bytes(const SecretKey& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), kKeySize);
}

TEST(PresharedKeyStoreTest, FileRoundTripsWithOwnerOnlyModes) {
  InitCrypto();
  const std::string dir = TempDir() + "/state";  // Created by the first save.
  FilePresharedKeyStore store(dir);
  absl::StatusOr<PresharedKeyRecords> empty = store.Load();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty()) << "a first start has no keys";

  PresharedKeyRecords records;
  MeshPresharedKey stable;
  stable.generation = 2;
  stable.key = SecretKey::Random();
  records.emplace("demo", stable.Clone());
  MeshPresharedKey rolling;
  rolling.generation = 5;
  rolling.key = SecretKey::Random();
  rolling.previous = SecretKey::Random();
  rolling.previous_generation = 4;
  rolling.step = PresharedKeyStep::kUseNew;
  records.emplace("other", rolling.Clone());
  ASSERT_TRUE(store.Save(records).ok());
  EXPECT_EQ(ModeOf(store.path()), 0600);
  EXPECT_EQ(ModeOf(dir), 0700);

  absl::StatusOr<PresharedKeyRecords> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_TRUE(loaded->at("demo") == stable);
  EXPECT_TRUE(loaded->at("other") == rolling);
}

TEST(StateDirTest, CreatedOwnerOnly) {
  const std::string dir = TempDir() + "/operator-state";
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(ModeOf(dir), 0700);
}

TEST(PresharedKeyStoreTest, DamagedRecordsAreErrorsNamingTheFile) {
  const std::string dir = TempDir();
  FilePresharedKeyStore store(dir);
  for (const std::string& text :
       {std::string("not json"), std::string("{\"meshes\": []}"),
        std::string("{\"meshes\": {\"demo\": {\"generation\": 1, \"key\": \"short\"}}}"),
        std::string("{\"meshes\": {\"demo\": {\"generation\": -1, \"key\": \"" +
                    SecretKey::Random().ToBase64() + "\"}}}"),
        std::string("{\"meshes\": {\"demo\": {\"generation\": 1, \"step\": \"use-new\", "
                    "\"key\": \"" +
                    SecretKey::Random().ToBase64() + "\"}}}")}) {
    ASSERT_TRUE(WriteFileAtomically(store.path(), text, 0600).ok());
    absl::StatusOr<PresharedKeyRecords> loaded = store.Load();
    ASSERT_FALSE(loaded.ok()) << text;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(loaded.status().message().find(store.path()), std::string::npos) << loaded.status();
  }
  EXPECT_FALSE(DecodePresharedKey("{}", "Secret tm/keys key psk.demo").ok());
}

TEST(PresharedKeyStoreTest, RecordTextRoundTrips) {
  MeshPresharedKey record;
  record.generation = 7;
  record.key = SecretKey::Random();
  record.previous = SecretKey::Random();
  record.previous_generation = 6;
  record.step = PresharedKeyStep::kAcceptNew;
  absl::StatusOr<MeshPresharedKey> back = DecodePresharedKey(EncodePresharedKey(record), "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == record);
}

// A coordinator with an injected clock and no rollover thread: the test takes the steps.
class RolloverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }

  std::unique_ptr<Coordinator> Start(PresharedKeyStore* store) {
    Coordinator::Options options;
    options.psk_store = store;
    options.psk_tick_interval = absl::ZeroDuration();
    options.psk_rollover_step = absl::Seconds(15);
    options.now = [this] { return now_; };
    return std::make_unique<Coordinator>(&members_, std::move(options));
  }

  static std::vector<MeshSpec> Generation(uint64_t generation, const std::string& token = "") {
    std::vector<MeshSpec> meshes = Meshes(MeshManifest(24));
    meshes[0].preshared_key_generation = generation;
    if (!token.empty()) meshes[0].join_token = token;
    return meshes;
  }

  // The settings of the next update the watcher gets (a full map or a settings delta).
  static coord::Settings NextSettings(Subscription* sub) {
    coord::MapUpdate update;
    while (sub->Next(&update, absl::Milliseconds(200))) {
      if (update.has_settings()) return update.settings();
    }
    ADD_FAILURE() << "no settings update";
    return {};
  }

  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
  FakeMemberStore members_;
};

TEST_F(RolloverTest, KeyIsRandomPerCoordinatorAndNotTheToken) {
  FakePresharedKeyStore store_a, store_b;
  auto a = Start(&store_a);
  auto b = Start(&store_b);
  a->SetMeshes(Generation(0));
  b->SetMeshes(Generation(0));
  auto ra = RegisterAs(*a, Request(NewKey(), "one"));
  auto rb = RegisterAs(*b, Request(NewKey(), "two"));
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(ra->settings().preshared_key().size(), 32u);
  EXPECT_NE(ra->settings().preshared_key(), rb->settings().preshared_key())
      << "same Mesh, same token, different coordinators: independent keys";
  EXPECT_TRUE(ra->settings().accepted_preshared_key().empty());
  EXPECT_EQ(store_a.records().at("demo").key.ToBase64().size(), 44u);
  EXPECT_EQ(Bytes(store_a.records().at("demo").key), ra->settings().preshared_key());
}

TEST_F(RolloverTest, TokenRotationRefusesTheOldTokenAndChangesNothingForMembers) {
  FakePresharedKeyStore store;
  auto c = Start(&store);
  c->SetMeshes(Generation(0));
  const PublicKey alice = NewKey();
  auto registered = RegisterAs(*c, Request(alice, "alice"));
  ASSERT_TRUE(registered.ok());
  auto sub = c->Watch(alice);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate full;
  ASSERT_TRUE((*sub)->Next(&full, absl::Milliseconds(100)));

  const std::string new_token = "a brand new join token, rotated";
  c->SetMeshes(Generation(0, new_token));
  auto old = RegisterAs(*c, Request(NewKey(), "late", kTestJoinToken));
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), absl::StatusCode::kPermissionDenied);
  auto fresh = RegisterAs(*c, Request(NewKey(), "bob", new_token));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->settings().preshared_key(), registered->settings().preshared_key())
      << "the preshared key does not follow the token";
  // Alice hears of bob, and nothing else: no full map, no settings.
  coord::MapUpdate update;
  ASSERT_TRUE((*sub)->Next(&update, absl::Milliseconds(100)));
  EXPECT_FALSE(update.full());
  EXPECT_FALSE(update.has_settings());
  EXPECT_EQ(update.upsert_peers_size(), 1);
  EXPECT_FALSE((*sub)->Next(&update, absl::Milliseconds(50)));
  // Her session still works.
  EXPECT_TRUE(c->ReportEndpoints(alice, {"192.0.2.1:51820"}).ok());
}

TEST_F(RolloverTest, WatchersMoveThroughTheThreeSteps) {
  FakePresharedKeyStore store;
  auto c = Start(&store);
  c->SetMeshes(Generation(0));
  const PublicKey alice = NewKey();
  auto registered = RegisterAs(*c, Request(alice, "alice"));
  ASSERT_TRUE(registered.ok());
  const std::string old_key = registered->settings().preshared_key();
  auto sub = c->Watch(alice);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(NextSettings(sub->get()).preshared_key(), old_key);

  c->SetMeshes(Generation(1));  // Raised: the rollover starts.
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kAcceptNew);
  const coord::Settings a = NextSettings(sub->get());
  EXPECT_EQ(a.preshared_key(), old_key) << "(a) uses the old key";
  ASSERT_EQ(a.accepted_preshared_key().size(), 32u);
  const std::string new_key = a.accepted_preshared_key();
  EXPECT_NE(new_key, old_key);
  EXPECT_EQ(a.preshared_key_generation(), 0u);

  now_ += absl::Seconds(14);
  c->AdvancePresharedKeys();
  coord::MapUpdate none;
  EXPECT_FALSE((*sub)->Next(&none, absl::Milliseconds(50))) << "not due yet";

  now_ += absl::Seconds(1);
  c->AdvancePresharedKeys();
  const coord::Settings b = NextSettings(sub->get());
  EXPECT_EQ(b.preshared_key(), new_key) << "(b) uses the new key";
  EXPECT_EQ(b.accepted_preshared_key(), old_key) << "(b) still accepts the old one";
  EXPECT_EQ(b.preshared_key_generation(), 1u);
  // A member joining now gets step (b) too.
  auto late = RegisterAs(*c, Request(NewKey(), "late"));
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->settings().preshared_key(), new_key);
  EXPECT_EQ(late->settings().accepted_preshared_key(), old_key);
  coord::MapUpdate joined;
  ASSERT_TRUE((*sub)->Next(&joined, absl::Milliseconds(100)));

  now_ += absl::Seconds(15);
  c->AdvancePresharedKeys();
  const coord::Settings done = NextSettings(sub->get());
  EXPECT_EQ(done.preshared_key(), new_key);
  EXPECT_TRUE(done.accepted_preshared_key().empty()) << "(c) the old key is gone";
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kStable);
  EXPECT_EQ(c->counters().psk_rollover_steps.load(), 3u);
  EXPECT_FALSE(store.records().at("demo").previous.has_value()) << "the old key is not kept";

  now_ += absl::Minutes(5);
  c->AdvancePresharedKeys();
  EXPECT_FALSE((*sub)->Next(&none, absl::Milliseconds(50))) << "stable: nothing more";
  c->SetMeshes(Generation(0));  // Lowering does nothing.
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kStable);
  auto again = RegisterAs(*c, Request(NewKey(), "again"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->settings().preshared_key(), new_key);
}

TEST_F(RolloverTest, RestartKeepsTheKeyAndResumesMidRollover) {
  const std::string dir = TempDir();
  FilePresharedKeyStore store(dir);
  std::string old_key, new_key;
  {
    auto c = Start(&store);
    c->SetMeshes(Generation(0));
    auto r = RegisterAs(*c, Request(NewKey(), "one"));
    ASSERT_TRUE(r.ok());
    old_key = r->settings().preshared_key();
  }
  {
    auto c = Start(&store);
    c->SetMeshes(Generation(0));
    auto r = RegisterAs(*c, Request(NewKey(), "two"));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->settings().preshared_key(), old_key) << "a restart keeps the key";
    c->SetMeshes(Generation(1));
    now_ += absl::Seconds(15);
    c->AdvancePresharedKeys();
    ASSERT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kUseNew);
  }
  // Restarted at step (b): members get (b) again, and the step lasts a full grace period more.
  auto c = Start(&store);
  c->SetMeshes(Generation(1));
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kUseNew);
  auto r = RegisterAs(*c, Request(NewKey(), "three"));
  ASSERT_TRUE(r.ok());
  new_key = r->settings().preshared_key();
  EXPECT_NE(new_key, old_key);
  EXPECT_EQ(r->settings().accepted_preshared_key(), old_key);
  now_ += absl::Seconds(10);
  c->AdvancePresharedKeys();
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kUseNew);
  now_ += absl::Seconds(5);
  c->AdvancePresharedKeys();
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kStable);
  auto after = RegisterAs(*c, Request(NewKey(), "four"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->settings().preshared_key(), new_key);
  EXPECT_TRUE(after->settings().accepted_preshared_key().empty());
}

TEST_F(RolloverTest, NothingIsServedOrStepsUntilTheKeysAreSaved) {
  FakePresharedKeyStore store;
  store.FailWith(absl::UnavailableError("disk full"));
  auto c = Start(&store);
  c->SetMeshes(Generation(0));
  auto refused = RegisterAs(*c, Request(NewKey(), "early"));
  ASSERT_FALSE(refused.ok()) << "a mesh whose first key is not saved is not served";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);

  store.FailWith(absl::OkStatus());
  c->AdvancePresharedKeys();  // Loads (nothing), creates and saves the key, serves the mesh.
  auto r = RegisterAs(*c, Request(NewKey(), "one"));
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string old_key = r->settings().preshared_key();

  store.FailWith(absl::UnavailableError("disk full"));
  c->SetMeshes(Generation(1));
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kStable) << "not saved: not started";
  EXPECT_GE(c->counters().psk_save_failures.load(), 1u);
  auto same = RegisterAs(*c, Request(NewKey(), "two"));
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->settings().preshared_key(), old_key);
  EXPECT_TRUE(same->settings().accepted_preshared_key().empty());

  store.FailWith(absl::OkStatus());
  c->AdvancePresharedKeys();
  EXPECT_EQ(c->PresharedKeyStepOf("demo"), PresharedKeyStep::kAcceptNew);
}

TEST_F(RolloverTest, ADamagedStoreServesNothing) {
  FakePresharedKeyStore store;
  store.FailWith(absl::DataLossError("preshared-keys.json is not JSON"));
  auto c = Start(&store);
  c->SetMeshes(Generation(0));
  EXPECT_FALSE(RegisterAs(*c, Request(NewKey(), "one")).ok());
  EXPECT_EQ(store.saves(), 0) << "a key that cannot be read is never replaced";
}

TEST(RolloverThreadTest, TheCoordinatorsThreadTakesTheSteps) {
  InitCrypto();
  FakeMemberStore members;
  FakePresharedKeyStore store;
  Coordinator::Options options;
  options.psk_store = &store;
  options.psk_tick_interval = absl::Milliseconds(5);
  options.psk_rollover_step = absl::Milliseconds(30);
  Coordinator c(&members, std::move(options));
  std::vector<MeshSpec> meshes = Meshes();
  c.SetMeshes(meshes);
  meshes[0].preshared_key_generation = 1;
  c.SetMeshes(meshes);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (c.PresharedKeyStepOf("demo") != PresharedKeyStep::kStable && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(c.PresharedKeyStepOf("demo"), PresharedKeyStep::kStable);
  EXPECT_EQ(c.counters().psk_rollover_steps.load(), 3u);
  EXPECT_EQ(store.records().at("demo").generation, 1u);
}

}  // namespace
}  // namespace tunnelmesh
