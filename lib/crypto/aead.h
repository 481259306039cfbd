// Authenticated encryption as WireGuard uses it: ChaCha20-Poly1305 (RFC 8439) with a 96-bit nonce
// of four zero bytes followed by a little-endian 64-bit counter, and XChaCha20-Poly1305 for cookie
// replies. ChaCha20-Poly1305 runs on OpenSSL's EVP implementation from 256 bytes up (about twice
// libsodium's speed on this hardware) and on libsodium below, where OpenSSL's setup cost dominates.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "lib/crypto/blake2s.h"

namespace tunnelmesh {

inline constexpr size_t kAeadTagSize = 16;
inline constexpr size_t kXNonceSize = 24;

// Encrypts `plaintext` into `out` (plaintext.size() + 16 bytes: ciphertext then tag). `out` may
// equal plaintext.data(). Safe from any thread: each thread keeps its own cipher context, so the
// hot path allocates nothing.
void AeadSeal(const uint8_t key[32], uint64_t counter, Bytes plaintext, Bytes associated_data,
              uint8_t* out);

// Decrypts and authenticates `ciphertext` (including its 16-byte tag) into `out`
// (ciphertext.size() - 16 bytes). Returns false on a short input or a failed tag; `out` is then
// unspecified. `out` may equal ciphertext.data().
[[nodiscard]] bool AeadOpen(const uint8_t key[32], uint64_t counter, Bytes ciphertext,
                            Bytes associated_data, uint8_t* out);

void XAeadSeal(const uint8_t key[32], const uint8_t nonce[kXNonceSize], Bytes plaintext,
               Bytes associated_data, uint8_t* out);
[[nodiscard]] bool XAeadOpen(const uint8_t key[32], const uint8_t nonce[kXNonceSize],
                             Bytes ciphertext, Bytes associated_data, uint8_t* out);

// Fills `out` with random bytes from the OS CSPRNG (libsodium).
void RandomBytes(absl::Span<uint8_t> out);
// A uniformly random value below `upper_bound` (libsodium randombytes_uniform).
uint32_t RandomUniform(uint32_t upper_bound);

}  // namespace tunnelmesh
