#include "lib/disco/message.h"

#include <sodium.h>

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::disco {
namespace {

struct Member {
  SecretKey private_key;
  PublicKey public_key;
};

Member MakeMember() {
  InitCrypto();
  Member m{SecretKey::GeneratePrivate(), {}};
  m.public_key = DerivePublicKey(m.private_key);
  return m;
}

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

TxId MakeTxId(uint8_t seed) {
  TxId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed + i);
  return id;
}

CallMeMaybe FullCallMeMaybe() {
  CallMeMaybe call;
  for (int i = 0; i < static_cast<int>(kMaxCallMeMaybeEndpoints); ++i) {
    call.endpoints.push_back(i % 2 ? Ep("[2001:db8::1]:51820") : Ep("192.0.2.7:41641"));
    call.endpoints.back() =
        Endpoint(call.endpoints.back().address(), static_cast<uint16_t>(1000 + i));
  }
  return call;
}

std::vector<Message> SampleMessages() {
  return {
      Ping{MakeTxId(1)},
      Pong{MakeTxId(2), Ep("198.51.100.9:60000")},
      Pong{MakeTxId(3), Ep("[2001:db8:1::42]:443")},
      CallMeMaybe{},
      CallMeMaybe{{Ep("10.0.0.1:51820")}},
      FullCallMeMaybe(),
  };
}

class MessageTest : public ::testing::Test {
 protected:
  std::vector<uint8_t> SealTo(const Member& to, const Message& m) {
    std::vector<uint8_t> buf(kMaxDatagramSize);
    size_t n = Seal(alice_.private_key, alice_.public_key, to.public_key, m, absl::MakeSpan(buf));
    buf.resize(n);
    return buf;
  }

  Member alice_ = MakeMember();
  Member bob_ = MakeMember();
  Member carol_ = MakeMember();
};

TEST_F(MessageTest, EveryMessageRoundTrips) {
  for (const Message& m : SampleMessages()) {
    std::vector<uint8_t> datagram = SealTo(bob_, m);
    ASSERT_EQ(datagram.size(), SealedSize(m));
    ASSERT_GE(datagram.size(), kMinDatagramSize);
    ASSERT_LE(datagram.size(), kMaxDatagramSize);
    EXPECT_TRUE(IsDiscoMessage(datagram));
    PublicKey sender;
    Message out;
    OpenError error = OpenError::kBadSize;
    ASSERT_TRUE(Open(bob_.private_key, datagram, &sender, &out, &error));
    EXPECT_EQ(error, OpenError::kNone);
    EXPECT_EQ(sender, alice_.public_key);
    EXPECT_EQ(out, m);
  }
}

TEST_F(MessageTest, SizesAreAsDocumented) {
  EXPECT_EQ(kMinDatagramSize, 79u);
  EXPECT_EQ(SealedSize(CallMeMaybe{}), 80u);
  EXPECT_EQ(SealedSize(Ping{}), 91u);
  EXPECT_EQ(SealedSize(Pong{MakeTxId(0), Ep("1.2.3.4:5")}), 110u);
  EXPECT_EQ(SealedSize(FullCallMeMaybe()), kMaxDatagramSize);
  EXPECT_EQ(kMaxDatagramSize, 384u);
}

TEST_F(MessageTest, LayoutStartsWithMagicThenSenderKey) {
  std::vector<uint8_t> d = SealTo(bob_, Ping{MakeTxId(9)});
  EXPECT_EQ(0, std::memcmp(d.data(), kMagic.data(), kMagic.size()));
  EXPECT_EQ(0, std::memcmp(d.data() + 6, alice_.public_key.bytes.data(), kKeySize));
  // The body is really a crypto_box_easy to Bob under the nonce that follows the key.
  uint8_t plain[1 + kTxIdSize];
  ASSERT_EQ(d.size(), kHeaderSize + kBoxTagSize + sizeof(plain));
  ASSERT_EQ(
      0, crypto_box_open_easy(plain, d.data() + kHeaderSize, d.size() - kHeaderSize, d.data() + 38,
                              alice_.public_key.bytes.data(), bob_.private_key.data()));
  EXPECT_EQ(plain[0], static_cast<uint8_t>(MessageType::kPing));
  EXPECT_EQ(plain[1], 9);
}

TEST_F(MessageTest, PongEndpointEncoding) {
  uint8_t payload[kMaxPayloadSize];
  size_t n = SerializePayload(Pong{MakeTxId(0), Ep("1.2.3.4:51820")}, absl::MakeSpan(payload));
  ASSERT_EQ(n, 1 + kTxIdSize + kEndpointSize);
  const uint8_t* e = payload + 1 + kTxIdSize;
  EXPECT_EQ(e[0], 4);
  EXPECT_EQ(e[1], 1);
  EXPECT_EQ(e[4], 4);
  for (int i = 5; i < 17; ++i) EXPECT_EQ(e[i], 0) << i;
  EXPECT_EQ(e[17], 51820 >> 8);
  EXPECT_EQ(e[18], 51820 & 0xff);
}

TEST_F(MessageTest, FreshNonceEverySeal) {
  std::vector<uint8_t> a = SealTo(bob_, Ping{MakeTxId(1)});
  std::vector<uint8_t> b = SealTo(bob_, Ping{MakeTxId(1)});
  ASSERT_EQ(a.size(), b.size());
  EXPECT_NE(0, std::memcmp(a.data() + 38, b.data() + 38, kNonceSize));
}

TEST_F(MessageTest, NeverLooksLikeWireGuard) {
  // WireGuard messages start with a type byte 1-4 and three zero bytes.
  for (uint8_t type = 1; type <= 4; ++type) {
    std::vector<uint8_t> wg(148, 0);
    wg[0] = type;
    EXPECT_FALSE(IsDiscoMessage(wg));
  }
  EXPECT_TRUE(kMagic[0] < 1 || kMagic[0] > 4);
  EXPECT_FALSE(IsDiscoMessage({}));
  EXPECT_FALSE(IsDiscoMessage(Bytes(kMagic.data(), 5)));
  EXPECT_TRUE(IsDiscoMessage(Bytes(kMagic.data(), 6)));
}

TEST_F(MessageTest, WrongRecipientCannotOpen) {
  std::vector<uint8_t> d = SealTo(bob_, Ping{MakeTxId(1)});
  PublicKey sender;
  Message out;
  OpenError error;
  EXPECT_FALSE(Open(carol_.private_key, d, &sender, &out, &error));
  EXPECT_EQ(error, OpenError::kNotAuthentic);
}

TEST_F(MessageTest, ForgedSenderFieldFails) {
  std::vector<uint8_t> d = SealTo(bob_, Ping{MakeTxId(1)});
  std::memcpy(d.data() + 6, carol_.public_key.bytes.data(), kKeySize);
  PublicKey sender;
  Message out;
  OpenError error;
  EXPECT_FALSE(Open(bob_.private_key, d, &sender, &out, &error));
  EXPECT_EQ(error, OpenError::kNotAuthentic);
}

TEST_F(MessageTest, NonCanonicalSenderKeysAreRejected) {
  // X25519 ignores bit 255, so without this check the top bit of the sender field could be
  // flipped and the box would still open, under a name that is no member's.
  std::vector<uint8_t> d = SealTo(bob_, Ping{MakeTxId(1)});
  d[6 + 31] ^= 0x80;
  PublicKey sender;
  Message out;
  OpenError error;
  EXPECT_FALSE(Open(bob_.private_key, d, &sender, &out, &error));
  EXPECT_EQ(error, OpenError::kNotAuthentic);
  // p = 2^255 - 19 and above are non-canonical too; p - 1 is canonical (if useless).
  std::vector<uint8_t> p(d);
  std::fill(p.begin() + 6, p.begin() + 38, 0xff);
  p[6 + 31] = 0x7f;
  p[6] = 0xed;
  EXPECT_FALSE(PeekSender(p, &sender, &error));
  EXPECT_EQ(error, OpenError::kNotAuthentic);
  p[6] = 0xec;
  EXPECT_TRUE(PeekSender(p, &sender, &error));
}

TEST_F(MessageTest, EveryFlippedBitIsRejected) {
  std::vector<uint8_t> d = SealTo(bob_, Pong{MakeTxId(5), Ep("[2001:db8::5]:9")});
  for (size_t i = 0; i < d.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> t = d;
      t[i] ^= static_cast<uint8_t>(1 << bit);
      PublicKey sender;
      Message out;
      OpenError error;
      ASSERT_FALSE(Open(bob_.private_key, t, &sender, &out, &error)) << i << ":" << bit;
      EXPECT_EQ(error, i < kMagic.size() ? OpenError::kNotDisco : OpenError::kNotAuthentic);
    }
  }
}

TEST_F(MessageTest, EveryTruncationAndAnExtensionAreRejected) {
  for (const Message& m : SampleMessages()) {
    std::vector<uint8_t> d = SealTo(bob_, m);
    for (size_t len = 0; len < d.size(); ++len) {
      // A copy of exactly `len` bytes, so a sanitizer build catches any read past the end.
      std::vector<uint8_t> t(d.begin(), d.begin() + len);
      PublicKey sender;
      Message out;
      ASSERT_FALSE(Open(bob_.private_key, t, &sender, &out)) << len;
    }
    std::vector<uint8_t> longer = d;
    longer.push_back(0);
    PublicKey sender;
    Message out;
    EXPECT_FALSE(Open(bob_.private_key, longer, &sender, &out));
  }
}

TEST_F(MessageTest, SizeLimitsAreCheckedBeforeCrypto) {
  std::vector<uint8_t> d(kMagic.begin(), kMagic.end());
  d.resize(kMinDatagramSize - 1);
  PublicKey sender;
  OpenError error;
  EXPECT_FALSE(PeekSender(d, &sender, &error));
  EXPECT_EQ(error, OpenError::kBadSize);
  d.resize(kMaxDatagramSize + 1);
  EXPECT_FALSE(PeekSender(d, &sender, &error));
  EXPECT_EQ(error, OpenError::kBadSize);
  d.resize(kMinDatagramSize);
  EXPECT_TRUE(PeekSender(d, &sender, &error));
}

TEST_F(MessageTest, SealRefusesWhatItCannotEncodeOrFit) {
  uint8_t buf[kMaxDatagramSize];
  Message too_many = FullCallMeMaybe();
  std::get<CallMeMaybe>(too_many).endpoints.push_back(Ep("10.0.0.1:1"));
  EXPECT_EQ(SealedSize(too_many), 0u);
  EXPECT_EQ(
      Seal(alice_.private_key, alice_.public_key, bob_.public_key, too_many, absl::MakeSpan(buf)),
      0u);
  Message port_zero = Pong{MakeTxId(1), Endpoint(Ep("10.0.0.1:1").address(), 0)};
  EXPECT_EQ(
      Seal(alice_.private_key, alice_.public_key, bob_.public_key, port_zero, absl::MakeSpan(buf)),
      0u);
  Message ping = Ping{MakeTxId(1)};
  EXPECT_EQ(Seal(alice_.private_key, alice_.public_key, bob_.public_key, ping,
                 absl::MakeSpan(buf, SealedSize(ping) - 1)),
            0u);
  EXPECT_EQ(Seal(alice_.private_key, alice_.public_key, bob_.public_key, ping,
                 absl::MakeSpan(buf, SealedSize(ping))),
            SealedSize(ping));
  // A low-order recipient key (here all zero) would give an all-zero shared secret.
  EXPECT_EQ(Seal(alice_.private_key, alice_.public_key, PublicKey{}, ping, absl::MakeSpan(buf)),
            0u);
}

TEST_F(MessageTest, PrecomputedKeysInteroperateWithPlainSealAndOpen) {
  BoxKey alice_to_bob, bob_from_alice, bob_from_carol;
  ASSERT_TRUE(BoxKey::Derive(alice_.private_key, bob_.public_key, &alice_to_bob));
  ASSERT_TRUE(BoxKey::Derive(bob_.private_key, alice_.public_key, &bob_from_alice));
  ASSERT_TRUE(BoxKey::Derive(bob_.private_key, carol_.public_key, &bob_from_carol));
  EXPECT_FALSE(BoxKey::Derive(bob_.private_key, PublicKey{}, &bob_from_carol));
  ASSERT_TRUE(BoxKey::Derive(bob_.private_key, carol_.public_key, &bob_from_carol));

  Message m = Pong{MakeTxId(7), Ep("203.0.113.1:7")};
  uint8_t buf[kMaxDatagramSize];
  size_t n = SealWithKey(alice_to_bob, alice_.public_key, m, absl::MakeSpan(buf));
  ASSERT_GT(n, 0u);
  PublicKey sender;
  Message out;
  ASSERT_TRUE(Open(bob_.private_key, Bytes(buf, n), &sender, &out));
  EXPECT_EQ(out, m);
  ASSERT_TRUE(PeekSender(Bytes(buf, n), &sender));
  EXPECT_EQ(sender, alice_.public_key);
  ASSERT_TRUE(OpenWithKey(bob_from_alice, Bytes(buf, n), &out));
  EXPECT_EQ(out, m);
  // The key for another peer neither opens the box nor accepts the sender field.
  OpenError error;
  EXPECT_FALSE(OpenWithKey(bob_from_carol, Bytes(buf, n), &out, &error));
  EXPECT_EQ(error, OpenError::kNotAuthentic);

  std::vector<uint8_t> plain = SealTo(bob_, m);
  ASSERT_TRUE(OpenWithKey(bob_from_alice, plain, &out));
  EXPECT_EQ(out, m);
}

TEST_F(MessageTest, AuthenticButMalformedPayloadIsBadPayload) {
  BoxKey key;
  ASSERT_TRUE(BoxKey::Derive(alice_.private_key, bob_.public_key, &key));
  std::vector<std::vector<uint8_t>> bad = {
      {0},                                         // Unknown type.
      {9, 1, 2, 3},                                // Unknown type.
      std::vector<uint8_t>(1 + kTxIdSize - 1, 1),  // Ping one byte short.
      std::vector<uint8_t>(1 + kTxIdSize + 1, 1),  // Ping with a trailing byte.
      {3, 17},                                     // CallMeMaybe over the limit.
      {3, 1},                                      // CallMeMaybe missing its endpoint.
  };
  // A Pong whose endpoint breaks each rule in turn.
  uint8_t good[kMaxPayloadSize];
  size_t pong_size = SerializePayload(Pong{MakeTxId(1), Ep("1.2.3.4:5")}, absl::MakeSpan(good));
  std::vector<uint8_t> pong(good, good + pong_size);
  const size_t family = 1 + kTxIdSize;
  std::vector<uint8_t> t = pong;
  t[family] = 5;  // Unknown family.
  bad.push_back(t);
  t = pong;
  t[family + 1 + 15] = 1;  // IPv4 with a nonzero unused byte.
  bad.push_back(t);
  t = pong;
  t[family + 17] = t[family + 18] = 0;  // Port 0.
  bad.push_back(t);

  for (const std::vector<uint8_t>& payload : bad) {
    Message parsed;
    EXPECT_FALSE(ParsePayload(payload, &parsed));
    uint8_t buf[kMaxDatagramSize];
    size_t n = SealPayloadWithKey(key, alice_.public_key, payload, absl::MakeSpan(buf));
    ASSERT_GT(n, 0u);
    PublicKey sender;
    Message out;
    OpenError error;
    EXPECT_FALSE(Open(bob_.private_key, Bytes(buf, n), &sender, &out, &error));
    EXPECT_EQ(error, OpenError::kBadPayload);
  }
  Message parsed;
  EXPECT_TRUE(ParsePayload(pong, &parsed));
  uint8_t buf[kMaxDatagramSize];
  EXPECT_EQ(SealPayloadWithKey(key, alice_.public_key, {}, absl::MakeSpan(buf)), 0u);
  std::vector<uint8_t> huge(kMaxPayloadSize + 1, 3);
  EXPECT_EQ(SealPayloadWithKey(key, alice_.public_key, huge, absl::MakeSpan(buf)), 0u);
}

TEST_F(MessageTest, OpenErrorNames) {
  EXPECT_STREQ(OpenErrorName(OpenError::kNotAuthentic), "not_authentic");
  EXPECT_STREQ(OpenErrorName(OpenError::kBadPayload), "bad_payload");
}

}  // namespace
}  // namespace tunnelmesh::disco
