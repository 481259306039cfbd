#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/tai64n.h"

namespace tunnelmesh {
namespace {

std::string Hex(const uint8_t* data, size_t size) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), size));
}

Bytes AsBytes(std::string_view s) {
  return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(Blake2sTest, KnownAnswer) {
  uint8_t out[kHashSize];
  Blake2s({AsBytes("abc")}, out);
  EXPECT_EQ(Hex(out, kHashSize),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
  // Concatenated parts hash as one message.
  uint8_t split[kHashSize];
  Blake2s({AsBytes("a"), AsBytes("bc")}, split);
  EXPECT_EQ(Hex(split, kHashSize), Hex(out, kHashSize));
}

TEST(Blake2sTest, HmacMatchesOpenSslHmac) {
  std::mt19937 rng(7);
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  ASSERT_NE(hmac, nullptr);
  for (int round = 0; round < 50; ++round) {
    std::vector<uint8_t> key(rng() % 100 + 1), data(rng() % 300);
    for (auto& b : key) b = rng();
    for (auto& b : data) b = rng();
    uint8_t ours[kHashSize];
    HmacBlake2s(key, {data}, ours);

    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(hmac);
    char digest[] = "BLAKE2S-256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    ASSERT_EQ(EVP_MAC_init(ctx, key.data(), key.size(), params), 1);
    EVP_MAC_update(ctx, data.data(), data.size());
    uint8_t theirs[kHashSize];
    size_t len = 0;
    EVP_MAC_final(ctx, theirs, &len, sizeof(theirs));
    EVP_MAC_CTX_free(ctx);
    ASSERT_EQ(Hex(ours, kHashSize), Hex(theirs, kHashSize)) << "round " << round;
  }
  EVP_MAC_free(hmac);
}

TEST(Blake2sTest, KdfChainsHmacOutputs) {
  uint8_t key[kHashSize] = {1, 2, 3};
  uint8_t t1[kHashSize], t2[kHashSize], t3[kHashSize];
  Kdf(key, AsBytes("input"), {t1, t2, t3});
  uint8_t tau0[kHashSize], expect1[kHashSize], expect2[kHashSize];
  HmacBlake2s(Bytes(key, kHashSize), {AsBytes("input")}, tau0);
  const uint8_t one = 1, two = 2;
  HmacBlake2s(Bytes(tau0, kHashSize), {Bytes(&one, 1)}, expect1);
  HmacBlake2s(Bytes(tau0, kHashSize), {Bytes(expect1, kHashSize), Bytes(&two, 1)}, expect2);
  EXPECT_EQ(Hex(t1, kHashSize), Hex(expect1, kHashSize));
  EXPECT_EQ(Hex(t2, kHashSize), Hex(expect2, kHashSize));
  EXPECT_NE(Hex(t3, kHashSize), Hex(t2, kHashSize));
  // Output may alias the key, as the handshake's chaining key does.
  uint8_t chain[kHashSize] = {1, 2, 3};
  Kdf(chain, AsBytes("input"), {chain});
  EXPECT_EQ(Hex(chain, kHashSize), Hex(t1, kHashSize));
}

TEST(Blake2sTest, MacIsKeyedSixteenBytes) {
  uint8_t key[32] = {9};
  uint8_t a[kMacSize], b[kMacSize];
  Blake2sMac(Bytes(key, 32), AsBytes("message"), a);
  key[0] = 8;
  Blake2sMac(Bytes(key, 32), AsBytes("message"), b);
  EXPECT_NE(Hex(a, kMacSize), Hex(b, kMacSize));
  // BLAKE2s keyed with an empty-message reference value from the BLAKE2 test vectors: key
  // 000102..1f, empty input, 32-byte output. Truncation by parameter changes the output, so check
  // the full-length variant through OpenSSL directly to pin the parameterization we rely on.
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "BLAKE2SMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  uint8_t vector_key[32];
  for (int i = 0; i < 32; ++i) vector_key[i] = i;
  ASSERT_EQ(EVP_MAC_init(ctx, vector_key, 32, nullptr), 1);
  uint8_t full[32];
  size_t len = 0;
  EVP_MAC_final(ctx, full, &len, sizeof(full));
  EXPECT_EQ(Hex(full, 32), "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49");
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
}

TEST(AeadTest, MatchesLibsodiumIetf) {
  std::mt19937 rng(11);
  for (int round = 0; round < 100; ++round) {
    uint8_t key[32];
    for (auto& b : key) b = rng();
    uint64_t counter = (uint64_t{rng()} << 32) | rng();
    std::vector<uint8_t> plain(rng() % 2000), ad(rng() % 40);
    for (auto& b : plain) b = rng();
    for (auto& b : ad) b = rng();
    std::vector<uint8_t> ours(plain.size() + kAeadTagSize), theirs(plain.size() + kAeadTagSize);
    AeadSeal(key, counter, plain, ad, ours.data());
    uint8_t nonce[12] = {};
    for (int i = 0; i < 8; ++i) nonce[4 + i] = counter >> (8 * i);
    unsigned long long len = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt(theirs.data(), &len, plain.data(), plain.size(),
                                              ad.data(), ad.size(), nullptr, nonce, key);
    ASSERT_EQ(ours, theirs);
    std::vector<uint8_t> opened(plain.size());
    ASSERT_TRUE(AeadOpen(key, counter, ours, ad, opened.data()));
    EXPECT_EQ(opened, plain);
    // In place.
    std::vector<uint8_t> inplace = ours;
    ASSERT_TRUE(AeadOpen(key, counter, inplace, ad, inplace.data()));
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), inplace.begin()));
  }
}

TEST(AeadTest, RejectsTamperingWrongCounterAndShortInput) {
  uint8_t key[32] = {1};
  std::string msg = "attack at dawn";
  std::vector<uint8_t> sealed(msg.size() + kAeadTagSize), out(msg.size());
  AeadSeal(key, 5, AsBytes(msg), {}, sealed.data());
  EXPECT_TRUE(AeadOpen(key, 5, sealed, {}, out.data()));
  EXPECT_FALSE(AeadOpen(key, 6, sealed, {}, out.data()));
  sealed[3] ^= 1;
  EXPECT_FALSE(AeadOpen(key, 5, sealed, {}, out.data()));
  EXPECT_FALSE(AeadOpen(key, 5, Bytes(sealed.data(), 15), {}, out.data()));
  // Empty plaintext (a keepalive) is just a tag.
  uint8_t tag[kAeadTagSize];
  AeadSeal(key, 9, {}, {}, tag);
  EXPECT_TRUE(AeadOpen(key, 9, Bytes(tag, kAeadTagSize), {}, nullptr));
}

TEST(AeadTest, XChaChaRoundTrip) {
  uint8_t key[32] = {3}, nonce[kXNonceSize] = {4};
  uint8_t cookie[16] = {5}, sealed[32], opened[16];
  uint8_t ad[16] = {6};
  XAeadSeal(key, nonce, Bytes(cookie, 16), Bytes(ad, 16), sealed);
  ASSERT_TRUE(XAeadOpen(key, nonce, Bytes(sealed, 32), Bytes(ad, 16), opened));
  EXPECT_EQ(Hex(opened, 16), Hex(cookie, 16));
  ad[0] ^= 1;
  EXPECT_FALSE(XAeadOpen(key, nonce, Bytes(sealed, 32), Bytes(ad, 16), opened));
}

TEST(KeysTest, Base64RoundTripAndErrors) {
  InitCrypto();
  SecretKey priv = SecretKey::GeneratePrivate();
  auto parsed = SecretKey::FromBase64(priv.ToBase64());
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(*parsed == priv);
  PublicKey pub = DerivePublicKey(priv);
  auto pub_parsed = PublicKey::FromBase64(pub.ToBase64());
  ASSERT_TRUE(pub_parsed.ok());
  EXPECT_EQ(*pub_parsed, pub);
  EXPECT_FALSE(PublicKey::FromBase64("abc").ok());
  EXPECT_FALSE(PublicKey::FromBase64(pub.ToBase64().substr(0, 43) + "!").ok());
  auto bad = SecretKey::FromBase64("not a key");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()).find("not a key"), std::string::npos)
      << "secret text must not be echoed";
}

TEST(KeysTest, X25519AgreesAndRejectsLowOrderPoints) {
  SecretKey a = SecretKey::GeneratePrivate(), b = SecretKey::GeneratePrivate();
  SecretKey ab, ba;
  ASSERT_TRUE(X25519(a, DerivePublicKey(b), &ab));
  ASSERT_TRUE(X25519(b, DerivePublicKey(a), &ba));
  EXPECT_TRUE(ab == ba);
  PublicKey zero;
  SecretKey out;
  EXPECT_FALSE(X25519(a, zero, &out));
}

TEST(Tai64nTest, OrdersByTime) {
  absl::Time t = absl::FromUnixSeconds(1'700'000'000);
  Tai64n a = EncodeTai64n(t);
  EXPECT_EQ(a[0], 0x40);
  // The Unix epoch is TAI64 label 2^62 + 10, as in Linux and wireguard-go.
  Tai64n epoch = EncodeTai64n(absl::UnixEpoch());
  EXPECT_EQ(epoch, (Tai64n{0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0}));
  EXPECT_TRUE(Tai64nAfter(EncodeTai64n(t + absl::Milliseconds(20)), a));
  // Within the 2^24 ns granularity two stamps are equal, so not "after".
  EXPECT_FALSE(Tai64nAfter(EncodeTai64n(t + absl::Milliseconds(1)), a));
  EXPECT_FALSE(Tai64nAfter(a, EncodeTai64n(t + absl::Seconds(1))));
}

}  // namespace
}  // namespace tunnelmesh
