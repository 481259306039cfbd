#include "lib/crypto/keys.h"

#include <sodium.h>

#include <mutex>

namespace tunnelmesh {
namespace {

constexpr size_t kBase64KeyLength = 44;  // 32 bytes, padded base64.

absl::Status DecodeKey(std::string_view text, uint8_t out[kKeySize]) {
  size_t decoded = 0;
  const char* end = nullptr;
  if (text.size() != kBase64KeyLength || text.back() != '=' ||
      sodium_base642bin(out, kKeySize, text.data(), text.size(), nullptr, &decoded, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      decoded != kKeySize || end != text.data() + text.size()) {
    return absl::InvalidArgumentError(
        "\"" + std::string(text.substr(0, 60)) +
        "\" is not a base64 WireGuard key (expected 44 characters ending in \"=\")");
  }
  return absl::OkStatus();
}

std::string EncodeKey(const uint8_t bytes[kKeySize]) {
  char buffer[sodium_base64_ENCODED_LEN(kKeySize, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(buffer, sizeof(buffer), bytes, kKeySize, sodium_base64_VARIANT_ORIGINAL);
  return std::string(buffer);
}

}  // namespace

void InitCrypto() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // Nothing can work without a random source.
  });
}

absl::StatusOr<PublicKey> PublicKey::FromBase64(std::string_view text) {
  PublicKey key;
  if (absl::Status s = DecodeKey(text, key.bytes.data()); !s.ok()) return s;
  return key;
}

std::string PublicKey::ToBase64() const { return EncodeKey(bytes.data()); }

std::string PublicKey::Short() const { return ToBase64().substr(0, 8) + "..."; }

bool PublicKey::IsZero() const { return sodium_is_zero(bytes.data(), kKeySize) == 1; }

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), kKeySize); }

SecretKey::SecretKey(SecretKey&& other) noexcept {
  bytes_ = other.bytes_;
  sodium_memzero(other.bytes_.data(), kKeySize);
}

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    sodium_memzero(other.bytes_.data(), kKeySize);
  }
  return *this;
}

absl::StatusOr<SecretKey> SecretKey::FromBase64(std::string_view text) {
  SecretKey key;
  if (absl::Status s = DecodeKey(text, key.bytes_.data()); !s.ok()) {
    // Never echo secret material back in an error message.
    return absl::InvalidArgumentError(
        "value is not a base64 WireGuard key (expected 44 characters ending in \"=\")");
  }
  return key;
}

SecretKey SecretKey::Random() {
  InitCrypto();
  SecretKey key;
  randombytes_buf(key.bytes_.data(), kKeySize);
  return key;
}

SecretKey SecretKey::GeneratePrivate() {
  SecretKey key = Random();
  // Curve25519 clamping, as `wg genkey` applies it.
  key.bytes_[0] &= 248;
  key.bytes_[31] = (key.bytes_[31] & 127) | 64;
  return key;
}

std::string SecretKey::ToBase64() const { return EncodeKey(bytes_.data()); }

bool SecretKey::IsZero() const { return sodium_is_zero(bytes_.data(), kKeySize) == 1; }

bool operator==(const SecretKey& a, const SecretKey& b) {
  return sodium_memcmp(a.bytes_.data(), b.bytes_.data(), kKeySize) == 0;
}

PublicKey DerivePublicKey(const SecretKey& private_key) {
  PublicKey out;
  crypto_scalarmult_curve25519_base(out.bytes.data(), private_key.data());
  return out;
}

bool X25519(const SecretKey& private_key, const PublicKey& public_key, SecretKey* out) {
  // libsodium returns -1 when the shared point is all zero.
  return crypto_scalarmult_curve25519(out->mutable_data(), private_key.data(),
                                      public_key.bytes.data()) == 0;
}

}  // namespace tunnelmesh
