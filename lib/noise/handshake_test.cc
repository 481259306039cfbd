#include "lib/noise/handshake.h"

#include "gtest/gtest.h"

namespace tunnelmesh::noise {
namespace {

TEST(HandshakeTest, BothRolesDeriveMatchingKeys) {
  InitCrypto();
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity bob = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  SecretKey psk = SecretKey::Random();
  PeerStatics bob_seen_by_alice = PeerStatics::Make(alice, bob.public_key, psk.Clone());
  PeerStatics alice_seen_by_bob = PeerStatics::Make(bob, alice.public_key, psk.Clone());

  InitiatorState state;
  wire::HandshakeInitiation init;
  absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  ASSERT_TRUE(CreateInitiation(alice, bob_seen_by_alice, 77, now, &state, &init));
  EXPECT_EQ(init.sender_index, 77u);

  ConsumedInitiation consumed;
  ASSERT_TRUE(ConsumeInitiation(bob, init, &consumed));
  EXPECT_EQ(consumed.initiator_static, alice.public_key);
  EXPECT_EQ(consumed.timestamp, EncodeTai64n(now));

  wire::HandshakeResponse response;
  SessionKeys bob_keys;
  ASSERT_TRUE(CreateResponse(consumed, alice_seen_by_bob, 99, &response, &bob_keys));
  EXPECT_EQ(response.receiver_index, 77u);

  SessionKeys alice_keys;
  ASSERT_TRUE(ConsumeResponse(alice, bob_seen_by_alice, state, response, &alice_keys));
  EXPECT_TRUE(alice_keys.send == bob_keys.receive);
  EXPECT_TRUE(alice_keys.receive == bob_keys.send);
  EXPECT_FALSE(alice_keys.send == alice_keys.receive);
}

TEST(HandshakeTest, WrongResponderOrPskOrTamperingFails) {
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity bob = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity eve = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  PeerStatics bob_seen_by_alice = PeerStatics::Make(alice, bob.public_key, SecretKey());
  InitiatorState state;
  wire::HandshakeInitiation init;
  ASSERT_TRUE(CreateInitiation(alice, bob_seen_by_alice, 1, absl::Now(), &state, &init));

  ConsumedInitiation consumed;
  EXPECT_FALSE(ConsumeInitiation(eve, init, &consumed))
      << "only the addressed responder can open it";
  wire::HandshakeInitiation tampered = init;
  tampered.encrypted_timestamp[0] ^= 1;
  EXPECT_FALSE(ConsumeInitiation(bob, tampered, &consumed));

  ASSERT_TRUE(ConsumeInitiation(bob, init, &consumed));
  // Bob uses a different preshared key: Alice must reject the response.
  PeerStatics alice_seen_by_bob = PeerStatics::Make(bob, alice.public_key, SecretKey::Random());
  wire::HandshakeResponse response;
  SessionKeys keys;
  ASSERT_TRUE(CreateResponse(consumed, alice_seen_by_bob, 2, &response, &keys));
  EXPECT_FALSE(ConsumeResponse(alice, bob_seen_by_alice, state, response, &keys));
}

TEST(HandshakeTest, LowOrderPeerKeyIsRefused) {
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  PeerStatics zero = PeerStatics::Make(alice, PublicKey{}, SecretKey());
  InitiatorState state;
  wire::HandshakeInitiation init;
  EXPECT_FALSE(CreateInitiation(alice, zero, 1, absl::Now(), &state, &init));
}

}  // namespace
}  // namespace tunnelmesh::noise
