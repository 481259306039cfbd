#include "lib/noise/handshake.h"

#include "gtest/gtest.h"

namespace tunnelmesh::noise {
namespace {

TEST(HandshakeTest, BothRolesDeriveMatchingKeys) {
  InitCrypto();
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity bob = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  SecretKey psk = SecretKey::Random();
  PeerStatics bob_seen_by_alice = PeerStatics::Make(alice, bob.public_key);

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
  ASSERT_TRUE(CreateResponse(consumed, psk, 99, &response, &bob_keys));
  EXPECT_EQ(response.receiver_index, 77u);

  SessionKeys alice_keys;
  ASSERT_EQ(ConsumeResponse(alice, {psk.Clone(), std::nullopt}, state, response, &alice_keys),
            PresharedKeyUsed::kPrimary);
  EXPECT_TRUE(alice_keys.send == bob_keys.receive);
  EXPECT_TRUE(alice_keys.receive == bob_keys.send);
  EXPECT_FALSE(alice_keys.send == alice_keys.receive);
}

TEST(HandshakeTest, WrongResponderOrPskOrTamperingFails) {
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity bob = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity eve = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  PeerStatics bob_seen_by_alice = PeerStatics::Make(alice, bob.public_key);
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
  wire::HandshakeResponse response;
  SessionKeys keys;
  ASSERT_TRUE(CreateResponse(consumed, SecretKey::Random(), 2, &response, &keys));
  EXPECT_EQ(ConsumeResponse(alice, {SecretKey(), std::nullopt}, state, response, &keys),
            PresharedKeyUsed::kNone);
}

// A rollover (docs/protocol.md, "Preshared key"): the initiator tries its second key when the
// response does not open with the first; a third key opens with neither.
struct Exchange {
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  StaticIdentity bob = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  InitiatorState state;
  wire::HandshakeResponse response;
  SessionKeys bob_keys;

  // Alice initiates; Bob answers with `responder_psk`.
  explicit Exchange(const SecretKey& responder_psk) {
    PeerStatics bob_seen_by_alice = PeerStatics::Make(alice, bob.public_key);
    wire::HandshakeInitiation init;
    EXPECT_TRUE(CreateInitiation(alice, bob_seen_by_alice, 5, absl::Now(), &state, &init));
    ConsumedInitiation consumed;
    EXPECT_TRUE(ConsumeInitiation(bob, init, &consumed));
    EXPECT_TRUE(CreateResponse(consumed, responder_psk, 6, &response, &bob_keys));
  }
};

TEST(HandshakeTest, InitiatorAcceptsAResponseMadeWithItsSecondKey) {
  SecretKey old_psk = SecretKey::Random(), new_psk = SecretKey::Random();
  Exchange exchange(new_psk);
  SessionKeys alice_keys;
  EXPECT_EQ(ConsumeResponse(exchange.alice, {old_psk.Clone(), new_psk.Clone()}, exchange.state,
                            exchange.response, &alice_keys),
            PresharedKeyUsed::kSecondary);
  EXPECT_TRUE(alice_keys.send == exchange.bob_keys.receive);
  EXPECT_TRUE(alice_keys.receive == exchange.bob_keys.send);
}

TEST(HandshakeTest, InitiatorPrefersItsPrimaryKey) {
  SecretKey old_psk = SecretKey::Random(), new_psk = SecretKey::Random();
  Exchange exchange(old_psk);
  SessionKeys alice_keys;
  EXPECT_EQ(ConsumeResponse(exchange.alice, {old_psk.Clone(), new_psk.Clone()}, exchange.state,
                            exchange.response, &alice_keys),
            PresharedKeyUsed::kPrimary);
  EXPECT_TRUE(alice_keys.send == exchange.bob_keys.receive);
}

TEST(HandshakeTest, InitiatorRejectsAResponseMadeWithAThirdKey) {
  SecretKey old_psk = SecretKey::Random(), new_psk = SecretKey::Random();
  Exchange exchange(SecretKey::Random());
  SessionKeys alice_keys;
  EXPECT_EQ(ConsumeResponse(exchange.alice, {old_psk.Clone(), new_psk.Clone()}, exchange.state,
                            exchange.response, &alice_keys),
            PresharedKeyUsed::kNone);
  // Without a second key, a response made with it is refused too.
  Exchange with_new(new_psk);
  EXPECT_EQ(ConsumeResponse(with_new.alice, {old_psk.Clone(), std::nullopt}, with_new.state,
                            with_new.response, &alice_keys),
            PresharedKeyUsed::kNone);
}

TEST(HandshakeTest, LowOrderPeerKeyIsRefused) {
  StaticIdentity alice = StaticIdentity::FromPrivateKey(SecretKey::GeneratePrivate());
  PeerStatics zero = PeerStatics::Make(alice, PublicKey{});
  InitiatorState state;
  wire::HandshakeInitiation init;
  EXPECT_FALSE(CreateInitiation(alice, zero, 1, absl::Now(), &state, &init));
}

}  // namespace
}  // namespace tunnelmesh::noise
