#include "lib/crypto/control_proofs.h"

#include <string>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

std::string AsString(const ControlProof& proof) {
  return std::string(reinterpret_cast<const char*>(proof.data()), proof.size());
}

TEST(PossessionProof, OnlyTheKeyHolderCanAnswer) {
  const SecretKey member = SecretKey::GeneratePrivate();
  const SecretKey coordinator = SecretKey::GeneratePrivate();
  const PublicKey member_public = DerivePublicKey(member);
  std::optional<ControlProof> proof =
      PossessionProof(member, DerivePublicKey(coordinator), "challenge-1", "demo");
  ASSERT_TRUE(proof.has_value());
  EXPECT_TRUE(
      CheckPossessionProof(coordinator, member_public, "challenge-1", "demo", AsString(*proof)));
  // Bound to the challenge, the mesh and the key it claims.
  EXPECT_FALSE(
      CheckPossessionProof(coordinator, member_public, "challenge-2", "demo", AsString(*proof)));
  EXPECT_FALSE(
      CheckPossessionProof(coordinator, member_public, "challenge-1", "other", AsString(*proof)));
  const PublicKey someone_else = DerivePublicKey(SecretKey::GeneratePrivate());
  EXPECT_FALSE(
      CheckPossessionProof(coordinator, someone_else, "challenge-1", "demo", AsString(*proof)));
  // A proof made with another private key for the victim's public key fails.
  std::optional<ControlProof> forged = PossessionProof(
      SecretKey::GeneratePrivate(), DerivePublicKey(coordinator), "challenge-1", "demo");
  ASSERT_TRUE(forged.has_value());
  EXPECT_FALSE(
      CheckPossessionProof(coordinator, member_public, "challenge-1", "demo", AsString(*forged)));
  // Truncated or empty proofs fail.
  EXPECT_FALSE(CheckPossessionProof(coordinator, member_public, "challenge-1", "demo",
                                    AsString(*proof).substr(0, 31)));
  EXPECT_FALSE(CheckPossessionProof(coordinator, member_public, "challenge-1", "demo", ""));
}

TEST(PossessionProof, FieldBoundariesMatter) {
  const SecretKey member = SecretKey::GeneratePrivate();
  const SecretKey coordinator = SecretKey::GeneratePrivate();
  std::optional<ControlProof> a = PossessionProof(member, DerivePublicKey(coordinator), "ab", "c");
  std::optional<ControlProof> b = PossessionProof(member, DerivePublicKey(coordinator), "a", "bc");
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
}

TEST(PossessionProof, RefusesALowOrderCoordinatorKey) {
  const SecretKey member = SecretKey::GeneratePrivate();
  EXPECT_FALSE(PossessionProof(member, PublicKey{}, "challenge", "demo").has_value());
}

TEST(TokenProof, BindsTokenNonceAndCa) {
  const ControlProof proof = TokenProof("secret token", "nonce", "sha256:aa");
  EXPECT_TRUE(CheckTokenProof("secret token", "nonce", "sha256:aa", AsString(proof)));
  EXPECT_FALSE(CheckTokenProof("other token", "nonce", "sha256:aa", AsString(proof)));
  EXPECT_FALSE(CheckTokenProof("secret token", "nonce2", "sha256:aa", AsString(proof)));
  // An impostor's CA: the real coordinator's proof is for its own CA hash.
  EXPECT_FALSE(CheckTokenProof("secret token", "nonce", "sha256:bb", AsString(proof)));
  EXPECT_FALSE(CheckTokenProof("secret token", "nonce", "sha256:aa", ""));
}

}  // namespace
}  // namespace tunnelmesh
