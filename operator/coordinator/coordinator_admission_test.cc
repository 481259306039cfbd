// Admission: proof of possession, addresses and names that stay with their key, rate limits,
// call-me-maybe limits, expiry, the quarantine across restarts and its bounds, members that move
// to another mesh. The attacks these tests replay are findings 1, 5, 8 and 16 of the security
// review of b02ccb5.
#include <sys/stat.h>

#include <string>

#include "gtest/gtest.h"
#include "lib/crypto/control_proofs.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

std::string KeyString(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
}

const MemberStatus* Find(const std::vector<MemberStatus>& members, const PublicKey& key) {
  for (const MemberStatus& m : members) {
    if (m.record.public_key == key) return &m;
  }
  return nullptr;
}

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override { InitCrypto(); }
  std::unique_ptr<Coordinator> Make(Coordinator::Options options = {}, int v4_prefix = 24) {
    store_ = *StateStore::Open(TempDir());
    auto c = std::make_unique<Coordinator>(store_.get(), std::move(options));
    c->SetMeshes(Meshes(MeshManifest(v4_prefix)));
    return c;
  }
  std::unique_ptr<StateStore> store_;
};

TEST_F(AdmissionTest, RegistrationWithAnotherMembersKeyIsRefusedAndChangesNothing) {
  auto c = Make();
  const PublicKey bob = NewKey();
  auto registered = RegisterAs(*c, Request(bob, "bob"));
  ASSERT_TRUE(registered.ok()) << registered.status();
  ASSERT_TRUE(c->ReportEndpoints(bob, {"192.0.2.70:51820"}).ok());

  // The attacker holds the join token and bob's public key, not his private key: RegisterAs
  // proves with a stranger's key for a key NewKey did not make, so use a copy of bob's bytes.
  coord::RegisterRequest steal = Request(bob, "bob-evicted");
  (*steal.mutable_labels())["role"] = "attacker-chosen";
  coord::HelloRequest hello;
  hello.set_nonce(std::string(16, 'x'));
  auto challenge = c->Hello(hello, "192.0.2.130");
  ASSERT_TRUE(challenge.ok());
  PublicKey ephemeral;
  std::memcpy(ephemeral.bytes.data(), challenge->ephemeral_public_key().data(), kKeySize);
  std::optional<ControlProof> forged =
      PossessionProof(SecretKey::GeneratePrivate(), ephemeral, challenge->challenge(), "");
  ASSERT_TRUE(forged.has_value());
  steal.set_challenge(challenge->challenge());
  steal.set_possession_proof(std::string(forged->begin(), forged->end()));
  auto refused = c->Register(steal, "192.0.2.130");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(refused.status().message()).find("possession"), std::string::npos);
  // Without a challenge at all (an old agent, or a replay of a captured request).
  steal.clear_challenge();
  EXPECT_EQ(c->Register(steal, "192.0.2.130").status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(c->counters().refused_proofs.load(), 2u);

  const std::vector<MemberStatus> members = c->Members();
  const MemberStatus* after = Find(members, bob);
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->record.name, "bob");
  EXPECT_TRUE(after->record.labels.empty());
  EXPECT_EQ(after->record.mesh_ips[0].ToString(), registered->mesh_ips(0));
  EXPECT_EQ(after->endpoints, std::vector<std::string>{"192.0.2.70:51820"});
  // Bob's session still works.
  EXPECT_TRUE(c->Authenticate("Bearer " + registered->session_token()).ok());
}

TEST_F(AdmissionTest, AChallengeIsUsedOnce) {
  auto c = Make();
  const PublicKey a = NewKey();
  coord::HelloRequest hello;
  hello.set_nonce(std::string(16, 'x'));
  auto challenge = c->Hello(hello, "192.0.2.1");
  ASSERT_TRUE(challenge.ok());
  PublicKey ephemeral;
  std::memcpy(ephemeral.bytes.data(), challenge->ephemeral_public_key().data(), kKeySize);
  coord::RegisterRequest request = Request(a, "a");
  std::optional<ControlProof> proof =
      PossessionProof(*TestKeys::Find(a), ephemeral, challenge->challenge(), "");
  request.set_challenge(challenge->challenge());
  request.set_possession_proof(std::string(proof->begin(), proof->end()));
  ASSERT_TRUE(c->Register(request, "192.0.2.1").ok());
  // A replay of the same request (say, from a log) is refused.
  EXPECT_EQ(c->Register(request, "192.0.2.1").status().code(), absl::StatusCode::kAborted);
}

TEST_F(AdmissionTest, HelloProvesTheCoordinatorKnowsTheToken) {
  Coordinator::Options options;
  options.ca_hash = "sha256:00ff";
  auto c = Make(options);
  coord::HelloRequest hello;
  hello.set_nonce("sixteen-byte-non");
  auto response = c->Hello(hello, "192.0.2.1");
  ASSERT_TRUE(response.ok());
  ASSERT_EQ(response->token_proofs_size(), 1);
  EXPECT_TRUE(
      CheckTokenProof(kTestJoinToken, hello.nonce(), "sha256:00ff", response->token_proofs(0)));
  EXPECT_FALSE(
      CheckTokenProof("another token", hello.nonce(), "sha256:00ff", response->token_proofs(0)));
  EXPECT_FALSE(
      CheckTokenProof(kTestJoinToken, hello.nonce(), "sha256:impostor", response->token_proofs(0)));
  hello.set_nonce("short");
  EXPECT_EQ(c->Hello(hello, "192.0.2.1").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AdmissionTest, AFreedAddressAndNameStayWithTheirKey) {
  auto c = Make();
  const PublicKey bob = NewKey();
  auto first = RegisterAs(*c, Request(bob, "bob"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(c->Leave(bob).ok());
  // Right after bob left, the attacker's key asks for his name: it gets neither name nor address.
  const PublicKey mallory = NewKey();
  auto taken = RegisterAs(*c, Request(mallory, "bob"));
  ASSERT_TRUE(taken.ok());
  EXPECT_NE(taken->name(), "bob");
  EXPECT_NE(taken->mesh_ips(0), first->mesh_ips(0));
  EXPECT_NE(taken->mesh_ips(1), first->mesh_ips(1));
  // Bob comes back with his key: his address and name again.
  auto back = RegisterAs(*c, Request(bob, "bob"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->name(), "bob");
  EXPECT_EQ(back->mesh_ips(0), first->mesh_ips(0));
  EXPECT_EQ(back->mesh_ips(1), first->mesh_ips(1));
}

// The critical finding of the review, across a restart: bob leaves, the coordinator restarts,
// and a new key asking for "bob" still gets neither his name nor his addresses.
TEST_F(AdmissionTest, TheQuarantineSurvivesARestart) {
  const std::string dir = TempDir();
  const std::vector<MeshSpec> meshes = Meshes(MeshManifest(24));
  const PublicKey bob = NewKey();
  absl::StatusOr<coord::RegisterResponse> first;
  {
    std::unique_ptr<StateStore> store = *StateStore::Open(dir);
    Coordinator c(store.get(), {});
    c.SetMeshes(meshes);
    first = RegisterAs(c, Request(bob, "bob"));
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(c.Leave(bob).ok());
    EXPECT_EQ(c.QuarantineEntries().size(), 2u);  // IPv4 and IPv6.
    ASSERT_TRUE(c.FlushStore(absl::Seconds(5)));
  }
  struct stat st {};
  ASSERT_EQ(stat((dir + "/quarantine.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  std::unique_ptr<StateStore> store = *StateStore::Open(dir);
  EXPECT_TRUE(store->members().empty());
  Coordinator c(store.get(), {});
  c.SetMeshes(meshes);
  EXPECT_EQ(c.QuarantineEntries().size(), 2u);
  auto taken = RegisterAs(c, Request(NewKey(), "bob"));
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_NE(taken->name(), "bob");
  EXPECT_NE(taken->mesh_ips(0), first->mesh_ips(0));
  EXPECT_NE(taken->mesh_ips(1), first->mesh_ips(1));
  auto back = RegisterAs(c, Request(bob, "bob"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->name(), "bob");
  EXPECT_EQ(back->mesh_ips(0), first->mesh_ips(0));
}

// The store keeps what the coordinator does, bounded: expired entries go on save and on load,
// beyond the cap the oldest go first, and a corrupt file is an error naming it.
TEST_F(AdmissionTest, TheKeptQuarantineIsBoundedAndExpires) {
  const std::string dir = TempDir();
  std::unique_ptr<StateStore> store = *StateStore::Open(dir);
  const absl::Time now = absl::Now();
  std::vector<QuarantineEntry> entries;
  for (int i = 0; i < 5; ++i) {
    entries.push_back({IpAddress::Parse("10.99.0." + std::to_string(10 + i)).value(), NewKey(),
                       "m" + std::to_string(i), now + absl::Hours(i) - absl::Minutes(30)});
  }
  // Entry 0 expired half an hour ago; the others expire in 0.5, 1.5, 2.5 and 3.5 hours.
  ASSERT_TRUE(store->SaveQuarantine(entries).ok());
  auto reopened = StateStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  std::vector<QuarantineEntry> kept = (*reopened)->quarantine();
  ASSERT_EQ(kept.size(), 4u);
  for (const QuarantineEntry& e : kept) EXPECT_NE(e.name, "m0");
  EXPECT_EQ(kept[0].until, absl::FromUnixSeconds(absl::ToUnixSeconds(entries[1].until)));

  // Expiry at load: an hour later, entry 1 is gone too.
  absl::StatusOr<std::vector<QuarantineEntry>> later =
      DecodeQuarantine(EncodeQuarantine(entries, now), "test", now + absl::Hours(1));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->size(), 3u);

  // The cap keeps the newest.
  std::vector<QuarantineEntry> capped = entries;
  TrimQuarantine(&capped, now, /*cap=*/2);
  ASSERT_EQ(capped.size(), 2u);
  EXPECT_EQ(capped[0].name, "m4");
  EXPECT_EQ(capped[1].name, "m3");

  FILE* f = fopen((dir + "/quarantine.json").c_str(), "w");
  fputs("{\"quarantine\": [{\"ip\": \"nope\"}]}", f);
  fclose(f);
  auto corrupt = StateStore::Open(dir);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(std::string(corrupt.status().message()).find("quarantine.json"), std::string::npos)
      << corrupt.status();
}

TEST_F(AdmissionTest, TheQuarantineIsCappedOldestFirst) {
  Coordinator::Options options;
  options.max_quarantined = 2;
  auto c = Make(options, 24);
  const PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(*c, Request(a, "a")).ok());
  auto b_registered = RegisterAs(*c, Request(b, "b"));
  ASSERT_TRUE(b_registered.ok());
  ASSERT_TRUE(c->Leave(a).ok());
  absl::SleepFor(absl::Milliseconds(2));  // b's entries expire strictly later than a's.
  ASSERT_TRUE(c->Leave(b).ok());
  const std::vector<QuarantineEntry> kept = c->QuarantineEntries();
  ASSERT_EQ(kept.size(), 2u);
  for (const QuarantineEntry& e : kept) EXPECT_EQ(e.key, b);
  ASSERT_TRUE(c->FlushStore(absl::Seconds(5)));
  EXPECT_EQ((*StateStore::Open(store_->dir()))->quarantine().size(), 2u);
}

// A member that registers in another mesh: its old mesh is told it is gone, the relay is told to
// rescope its session, and the address it leaves behind is quarantined like a departed member's.
TEST_F(AdmissionTest, AMemberThatMovesToAnotherMeshIsRescopedAndItsOldAddressQuarantined) {
  std::vector<PublicKey> moved;
  Coordinator::Options options;
  options.on_member_moved = [&moved](const PublicKey& key) { moved.push_back(key); };
  store_ = *StateStore::Open(TempDir());
  Coordinator c(store_.get(), options);
  c.SetMeshes(
      Meshes(MeshManifest(24) +
             "---\napiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: lab}\n"
             "spec:\n  ipv4CIDR: 10.98.0.0/24\n"
             "  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}\n"));
  const PublicKey bob = NewKey(), alice = NewKey();
  coord::RegisterRequest in_demo = Request(bob, "bob");
  in_demo.set_mesh("demo");
  auto first = RegisterAs(c, in_demo);
  ASSERT_TRUE(first.ok()) << first.status();
  coord::RegisterRequest alice_in_demo = Request(alice, "alice");
  alice_in_demo.set_mesh("demo");
  ASSERT_TRUE(RegisterAs(c, alice_in_demo).ok());
  auto sub = c.Watch(alice);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate update;
  ASSERT_TRUE((*sub)->Next(&update, absl::Milliseconds(100)));  // The full map.

  coord::RegisterRequest in_lab = Request(bob, "bob");
  in_lab.set_mesh("lab");
  auto second = RegisterAs(c, in_lab);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(c.MeshOf(bob), "lab");
  EXPECT_EQ(moved, std::vector<PublicKey>{bob});
  bool removed = false;
  while ((*sub)->Next(&update, absl::Milliseconds(50))) {
    for (const std::string& key : update.removed_peers())
      removed = removed || key == KeyString(bob);
  }
  EXPECT_TRUE(removed) << "demo's members were not told that bob left their mesh";
  // Bob's old demo addresses are kept from other keys.
  coord::RegisterRequest carol = Request(NewKey(), "carol");
  carol.set_mesh("demo");
  auto next = RegisterAs(c, carol);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_NE(next->mesh_ips(0), first->mesh_ips(0));
  // Registering again in the same mesh moves nothing.
  ASSERT_TRUE(RegisterAs(c, in_lab).ok());
  EXPECT_EQ(moved.size(), 1u);
}

TEST_F(AdmissionTest, WithoutQuarantineAFreedAddressIsReused) {
  Coordinator::Options options;
  options.quarantine = absl::ZeroDuration();
  auto c = Make(options);
  const PublicKey bob = NewKey();
  auto first = RegisterAs(*c, Request(bob, "bob"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(c->Leave(bob).ok());
  auto next = RegisterAs(*c, Request(NewKey(), "bob"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->mesh_ips(0), first->mesh_ips(0));
  EXPECT_EQ(next->name(), "bob");
}

TEST_F(AdmissionTest, AMeshFullOfQuarantinedAddressesSaysSo) {
  auto c = Make({}, /*v4_prefix=*/30);  // Two usable addresses.
  const PublicKey a = NewKey();
  ASSERT_TRUE(RegisterAs(*c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(*c, Request(NewKey(), "b")).ok());
  ASSERT_TRUE(c->Leave(a).ok());
  auto refused = RegisterAs(*c, Request(NewKey(), "c"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(refused.status().message()).find("--ip-quarantine"), std::string::npos)
      << refused.status();
}

TEST_F(AdmissionTest, RegistrationsAndWrongTokensAreLimitedPerSource) {
  Coordinator::Options options;
  options.registrations_per_source = {.rate = 0.001, .burst = 3};
  options.wrong_tokens_per_source = {.rate = 0.001, .burst = 2};
  auto c = Make(options);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(RegisterAs(*c, Request(NewKey(), "m" + std::to_string(i)), "198.51.100.1").ok());
  }
  auto limited = RegisterAs(*c, Request(NewKey(), "m3"), "198.51.100.1");
  EXPECT_EQ(limited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(RegisterAs(*c, Request(NewKey(), "m4"), "198.51.100.2").ok());

  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(RegisterAs(*c, Request(NewKey(), "g", "guess"), "198.51.100.3").status().code(),
              absl::StatusCode::kPermissionDenied);
  }
  // The third guess is not even compared.
  auto guess = RegisterAs(*c, Request(NewKey(), "g", "guess"), "198.51.100.3");
  EXPECT_EQ(guess.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c->counters().rejected_tokens.load(), 2u);
  EXPECT_GE(c->counters().rate_limited.load(), 2u);
}

TEST_F(AdmissionTest, CallMeMaybeCarriesOnlyReportedEndpointsAndIsLimited) {
  auto c = Make();
  const PublicKey alice = NewKey(), mallory = NewKey();
  ASSERT_TRUE(RegisterAs(*c, Request(alice, "alice")).ok());
  ASSERT_TRUE(RegisterAs(*c, Request(mallory, "mallory")).ok());
  ASSERT_TRUE(c->ReportEndpoints(mallory, {"192.0.2.130:51820"}).ok());
  auto sub = c->Watch(alice);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate update;
  ASSERT_TRUE((*sub)->Next(&update, absl::Milliseconds(100)));  // The full map.

  // Endpoints must parse, and only the sender's own reach the peer.
  EXPECT_EQ(c->CallMeMaybe(mallory, alice, {"not an endpoint"}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(c->CallMeMaybe(mallory, alice, {"192.0.2.130:51820", "203.0.113.9:9001"}).ok());
  ASSERT_TRUE((*sub)->Next(&update, absl::Milliseconds(100)));
  ASSERT_TRUE(update.has_call_me_maybe());
  EXPECT_EQ(update.call_me_maybe().from_public_key(), KeyString(mallory));
  ASSERT_EQ(update.call_me_maybe().endpoints_size(), 1);
  EXPECT_EQ(update.call_me_maybe().endpoints(0), "192.0.2.130:51820");
  EXPECT_EQ(c->counters().call_me_maybe_endpoints_dropped.load(), 1u);

  // A flood: the burst (4, one used above) passes, the rest is refused and never reaches alice.
  int passed = 0;
  for (int i = 0; i < 100; ++i) {
    passed += c->CallMeMaybe(mallory, alice, {"192.0.2.130:51820"}).ok() ? 1 : 0;
  }
  EXPECT_EQ(passed, 3);
  int delivered = 0;
  while ((*sub)->Next(&update, absl::Milliseconds(20))) delivered += update.has_call_me_maybe();
  EXPECT_EQ(delivered, 3);
}

TEST_F(AdmissionTest, IdleMembersExpireAndWatchersDoNot) {
  Coordinator::Options options;
  options.member_expiry = absl::Hours(1);
  auto c = Make(options);
  const PublicKey idle = NewKey(), watching = NewKey();
  auto idle_registration = RegisterAs(*c, Request(idle, "idle"));
  ASSERT_TRUE(idle_registration.ok());
  ASSERT_TRUE(RegisterAs(*c, Request(watching, "watching")).ok());
  auto sub = c->Watch(watching);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(c->ExpireIdle(absl::Now() + absl::Minutes(30)), 0u);
  EXPECT_EQ(c->ExpireIdle(absl::Now() + absl::Hours(2)), 1u);
  EXPECT_FALSE(c->IsMember(idle));
  EXPECT_TRUE(c->IsMember(watching));
  EXPECT_EQ(c->counters().expired_members.load(), 1u);
  // Its session is gone; its address stays quarantined for its key.
  EXPECT_FALSE(c->Authenticate("Bearer " + idle_registration->session_token()).ok());
  auto back = RegisterAs(*c, Request(idle, "idle"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->mesh_ips(0), idle_registration->mesh_ips(0));
}

TEST_F(AdmissionTest, SessionTokensAreRevokedOnReRegistrationAndLeave) {
  auto c = Make();
  const PublicKey a = NewKey();
  auto first = RegisterAs(*c, Request(a, "a"));
  ASSERT_TRUE(first.ok());
  auto second = RegisterAs(*c, Request(a, "a"));
  ASSERT_TRUE(second.ok());
  EXPECT_NE(first->session_token(), second->session_token());
  EXPECT_FALSE(c->Authenticate("Bearer " + first->session_token()).ok());
  EXPECT_TRUE(c->Authenticate("Bearer " + second->session_token()).ok());
  ASSERT_TRUE(c->Leave(a).ok());
  EXPECT_FALSE(c->Authenticate("Bearer " + second->session_token()).ok());
}

TEST_F(AdmissionTest, AKnownMemberReRegistersWithoutTheCurrentToken) {
  auto c = Make();
  const PublicKey a = NewKey();
  auto first = RegisterAs(*c, Request(a, "a"));
  ASSERT_TRUE(first.ok());
  // The token was rotated: the member still holds the old one, and its key.
  auto again = RegisterAs(*c, Request(a, "a", "the old token"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->mesh_ips(0), first->mesh_ips(0));
  // A newcomer with the old token is refused, and so is the member once it left.
  EXPECT_EQ(RegisterAs(*c, Request(NewKey(), "b", "the old token")).status().code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(c->Leave(a).ok());
  EXPECT_EQ(RegisterAs(*c, Request(a, "a", "the old token")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AdmissionTest, TheJoinTokenAdmitsNoMoreThanTheMeshsCap) {
  store_ = *StateStore::Open(TempDir());
  auto c = std::make_unique<Coordinator>(store_.get(), Coordinator::Options{});
  std::string manifest = MeshManifest(24);
  const std::string anchor = "  joinTokenSecretRef";
  manifest.insert(manifest.find(anchor), "  joinTokenMaxMembers: 2\n");
  c->SetMeshes(Meshes(manifest));
  const PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(*c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(*c, Request(b, "b")).ok());
  auto refused = RegisterAs(*c, Request(NewKey(), "c"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(refused.status().message()).find("spec.joinTokenMaxMembers (2)"),
            std::string::npos)
      << refused.status();
  EXPECT_EQ(c->counters().refused_token_cap.load(), 1u);
  EXPECT_EQ(c->member_count(), 2u);
  // A wrong token learns nothing about the cap: it is refused as a wrong token.
  EXPECT_EQ(RegisterAs(*c, Request(NewKey(), "d", "a wrong token here")).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Members already in the mesh re-register (after a restart, say) at the cap.
  EXPECT_TRUE(RegisterAs(*c, Request(a, "a")).ok());
  // One leaves: the token admits one newcomer again.
  ASSERT_TRUE(c->Leave(b).ok());
  EXPECT_TRUE(RegisterAs(*c, Request(NewKey(), "c")).ok());
  EXPECT_FALSE(RegisterAs(*c, Request(NewKey(), "e")).ok());
  // Raising the cap takes effect at once.
  manifest.replace(manifest.find("joinTokenMaxMembers: 2"), 22, "joinTokenMaxMembers: 3");
  c->SetMeshes(Meshes(manifest));
  EXPECT_TRUE(RegisterAs(*c, Request(NewKey(), "e")).ok());
  EXPECT_EQ(c->counters().refused_token_cap.load(), 2u);
}

// Mesh "lab" (10.77.0.0/24) with its own Secret holding `token`.
std::string LabManifest(const std::string& token) {
  return "---\napiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: lab}\nspec:\n"
         "  ipv4CIDR: 10.77.0.0/24\n"
         "  joinTokenSecretRef: {namespace: tunnelmesh, name: lab-join, key: token}\n---\n"
         "apiVersion: v1\nkind: Secret\nmetadata: {namespace: tunnelmesh, name: lab-join}\n"
         "stringData: {token: \"" +
         token + "\"}\n";
}

TEST_F(AdmissionTest, MembersKeepTheirMeshAndATokenPicksItsMesh) {
  auto c = Make();
  const PublicKey a = NewKey();
  auto first = RegisterAs(*c, Request(a, "a"));  // No --mesh: the only mesh, demo.
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string lab_token = "the lab's own join token";
  c->SetMeshes(Meshes(MeshManifest(24) + LabManifest(lab_token)));

  // The member registers again without --mesh (and without the token): back into demo.
  auto again = RegisterAs(*c, Request(a, "a", ""));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->settings().mesh(), "demo");
  EXPECT_EQ(again->mesh_ips(0), first->mesh_ips(0));
  // A newcomer's token picks its mesh.
  auto lab = RegisterAs(*c, Request(NewKey(), "l", lab_token));
  ASSERT_TRUE(lab.ok()) << lab.status();
  EXPECT_EQ(lab->settings().mesh(), "lab");
  EXPECT_EQ(lab->mesh_ips(0).rfind("10.77.0.", 0), 0u) << lab->mesh_ips(0);
  auto demo = RegisterAs(*c, Request(NewKey(), "d"));
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_EQ(demo->settings().mesh(), "demo");

  // A token of no mesh: refused as a wrong token, naming no mesh.
  const uint64_t rejected = c->counters().rejected_tokens.load();
  auto wrong = RegisterAs(*c, Request(NewKey(), "w", "a token of no mesh at all"));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(wrong.status().message()).find("not valid for any Mesh"), std::string::npos)
      << wrong.status();
  EXPECT_EQ(std::string(wrong.status().message()).find("lab"), std::string::npos);
  EXPECT_EQ(c->counters().rejected_tokens.load(), rejected + 1);
  // An unknown --mesh names the flag.
  coord::RegisterRequest nope = Request(NewKey(), "n");
  nope.set_mesh("nope");
  auto unknown = RegisterAs(*c, nope);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(unknown.status().message()).find("--mesh"), std::string::npos);

  // Meshes sharing a token: the newcomer is told their names and the flag.
  c->SetMeshes(Meshes(MeshManifest(24) + LabManifest(kTestJoinToken)));
  auto shared = RegisterAs(*c, Request(NewKey(), "s"));
  EXPECT_EQ(shared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(shared.status().message()).find("(demo, lab): name one with --mesh"),
            std::string::npos)
      << shared.status();
  coord::RegisterRequest named = Request(NewKey(), "s");
  named.set_mesh("lab");
  EXPECT_TRUE(RegisterAs(*c, named).ok());
  // ... and the members still need no --mesh.
  EXPECT_TRUE(RegisterAs(*c, Request(a, "a", "")).ok());
}

}  // namespace
}  // namespace tunnelmesh
