// Admission: proof of possession, addresses and names that stay with their key, rate limits,
// call-me-maybe limits, expiry. The attacks these tests replay are findings 1, 5, 8 and 16 of the
// security review of b02ccb5.
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

}  // namespace
}  // namespace tunnelmesh
