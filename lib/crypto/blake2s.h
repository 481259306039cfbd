// BLAKE2s and the constructions WireGuard builds on it (whitepaper section 5.4): HASH, MAC
// (keyed BLAKE2s with a 16-byte output), HMAC (RFC 2104 over BLAKE2s) and the KDF_n chain.
// Backed by OpenSSL 3; libsodium has no BLAKE2s. Thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "absl/types/span.h"

namespace tunnelmesh {

inline constexpr size_t kHashSize = 32;
inline constexpr size_t kMacSize = 16;

using Bytes = absl::Span<const uint8_t>;

// out = BLAKE2s-256(parts[0] || parts[1] || ...).
void Blake2s(std::initializer_list<Bytes> parts, uint8_t out[kHashSize]);

// out = keyed BLAKE2s(key, data) truncated by parameter to 16 bytes (WireGuard's MAC). `key` is 1
// to 32 bytes.
void Blake2sMac(Bytes key, Bytes data, uint8_t out[kMacSize]);

// out = HMAC-BLAKE2s(key, data), 32 bytes.
void HmacBlake2s(Bytes key, std::initializer_list<Bytes> data, uint8_t out[kHashSize]);

// WireGuard's KDF_n: tau0 = HMAC(key, input), tau_i = HMAC(tau0, tau_{i-1} || i). Writes
// `outputs.size()` (1 to 3) 32-byte values; any pointer may alias `key`.
void Kdf(const uint8_t key[kHashSize], Bytes input, std::initializer_list<uint8_t*> outputs);

}  // namespace tunnelmesh
