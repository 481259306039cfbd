// Curve25519 keys as WireGuard uses them: 32 bytes, base64 in configs and on screens. Private keys
// and other secrets live in SecretKey, which wipes itself (sodium_memzero) and compares in constant
// time; public keys are plain values.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace tunnelmesh {

inline constexpr size_t kKeySize = 32;

// A public key (or any non-secret 32-byte value).
struct PublicKey {
  std::array<uint8_t, kKeySize> bytes{};

  // Parses the 44-character base64 form `wg` prints; names what is wrong otherwise.
  [[nodiscard]] static absl::StatusOr<PublicKey> FromBase64(std::string_view text);
  std::string ToBase64() const;
  // The first 8 base64 characters and an ellipsis, for logs.
  std::string Short() const;
  bool IsZero() const;
  friend bool operator==(const PublicKey& a, const PublicKey& b) { return a.bytes == b.bytes; }
  friend bool operator<(const PublicKey& a, const PublicKey& b) { return a.bytes < b.bytes; }
  template <typename H>
  friend H AbslHashValue(H h, const PublicKey& k) {
    return H::combine_contiguous(std::move(h), k.bytes.data(), k.bytes.size());
  }
};

// A secret 32-byte value: a private key, a preshared key, a chaining key. Move-only, wiped on
// destruction, compared in constant time.
class SecretKey {
 public:
  SecretKey() { bytes_.fill(0); }
  explicit SecretKey(const uint8_t bytes[kKeySize]) { std::memcpy(bytes_.data(), bytes, kKeySize); }
  ~SecretKey();
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;

  [[nodiscard]] static absl::StatusOr<SecretKey> FromBase64(std::string_view text);
  // Fresh random bytes from the OS (libsodium randombytes).
  static SecretKey Random();
  // A Curve25519 private key: random and clamped, as `wg genkey` makes.
  static SecretKey GeneratePrivate();
  std::string ToBase64() const;
  SecretKey Clone() const { return SecretKey(bytes_.data()); }
  bool IsZero() const;

  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* mutable_data() { return bytes_.data(); }
  friend bool operator==(const SecretKey& a, const SecretKey& b);

 private:
  std::array<uint8_t, kKeySize> bytes_;
};

// X25519 public key of a private key.
PublicKey DerivePublicKey(const SecretKey& private_key);

// X25519(private, public) into `out`. Returns false when the result is all zero (a low-order
// point), which WireGuard treats as a failed handshake.
[[nodiscard]] bool X25519(const SecretKey& private_key, const PublicKey& public_key,
                          SecretKey* out);

// Initializes libsodium; call once at process start (idempotent, thread-safe).
void InitCrypto();

}  // namespace tunnelmesh
