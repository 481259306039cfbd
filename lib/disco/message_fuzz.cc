// Fuzz target: the discovery message parser and opener on arbitrary bytes. Open must never read out
// of bounds or accept unauthentic input; whatever ParsePayload accepts must serialize back to the
// same bytes; and sealing arbitrary bytes as a payload and opening them must agree with
// ParsePayload, so the path behind a successful decryption is fuzzed too.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lib/disco/message.h"

using namespace tunnelmesh;
using namespace tunnelmesh::disco;

namespace {

struct Keys {
  SecretKey alice_private;
  PublicKey alice_public;
  SecretKey bob_private;
  BoxKey alice_to_bob;
  BoxKey bob_from_alice;

  Keys() {
    InitCrypto();
    uint8_t a[kKeySize], b[kKeySize];
    for (size_t i = 0; i < kKeySize; ++i) {
      a[i] = static_cast<uint8_t>(i * 7 + 1);
      b[i] = static_cast<uint8_t>(i * 13 + 5);
    }
    alice_private = SecretKey(a);
    bob_private = SecretKey(b);
    alice_public = DerivePublicKey(alice_private);
    if (!BoxKey::Derive(alice_private, DerivePublicKey(bob_private), &alice_to_bob) ||
        !BoxKey::Derive(bob_private, alice_public, &bob_from_alice)) {
      std::abort();
    }
  }
};

const Keys& TheKeys() {
  static const Keys keys;
  return keys;
}

// Accepted payloads have exactly one encoding, and opening a sealed payload agrees with
// ParsePayload.
void CheckPayload(Bytes payload) {
  const Keys& keys = TheKeys();
  Message parsed;
  bool parse_ok = ParsePayload(payload, &parsed);
  if (parse_ok) {
    uint8_t out[kMaxPayloadSize];
    size_t n = SerializePayload(parsed, absl::MakeSpan(out));
    if (n != payload.size() || std::memcmp(out, payload.data(), n) != 0) std::abort();
  }
  uint8_t datagram[kMaxDatagramSize];
  size_t n =
      SealPayloadWithKey(keys.alice_to_bob, keys.alice_public, payload, absl::MakeSpan(datagram));
  if ((n != 0) != (!payload.empty() && payload.size() <= kMaxPayloadSize)) std::abort();
  if (n == 0) return;
  Message opened;
  OpenError error;
  bool open_ok = OpenWithKey(keys.bob_from_alice, Bytes(datagram, n), &opened, &error);
  if (open_ok != parse_ok) std::abort();
  if (open_ok && !(opened == parsed)) std::abort();
  if (!open_ok && error != OpenError::kBadPayload) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Keys& keys = TheKeys();
  Bytes input(data, size);

  // Raw bytes as a datagram. Forging a box is out of reach, so this must never open.
  if (IsDiscoMessage(input) !=
      (size >= kMagic.size() && std::memcmp(data, kMagic.data(), kMagic.size()) == 0)) {
    std::abort();
  }
  Message message;
  if (OpenWithKey(keys.bob_from_alice, input, &message)) std::abort();

  // The same bytes behind a valid magic and sender, so they reach the size checks and the box.
  uint8_t shaped[kMaxDatagramSize + 8];
  if (size <= sizeof(shaped) - kMagic.size() - kKeySize) {
    std::memcpy(shaped, kMagic.data(), kMagic.size());
    std::memcpy(shaped + kMagic.size(), keys.alice_public.bytes.data(), kKeySize);
    std::memcpy(shaped + kMagic.size() + kKeySize, data, size);
    if (OpenWithKey(keys.bob_from_alice, Bytes(shaped, kMagic.size() + kKeySize + size),
                    &message)) {
      std::abort();
    }
  }

  CheckPayload(input);
  // The same bytes bent toward a well-formed payload (known type, right size, valid family), so
  // the accepting paths run often.
  uint8_t payload[kMaxPayloadSize];
  if (size >= 2) {
    size_t shaped_size = std::min(size, sizeof(payload));
    std::memcpy(payload, data, shaped_size);
    payload[0] = static_cast<uint8_t>(1 + data[0] % 3);
    size_t want = 1 + kTxIdSize;
    if (payload[0] == static_cast<uint8_t>(MessageType::kPong)) {
      want += kEndpointSize;
      if (shaped_size > 1 + kTxIdSize) payload[1 + kTxIdSize] = data[1] % 2 ? 4 : 6;
    } else if (payload[0] == static_cast<uint8_t>(MessageType::kCallMeMaybe)) {
      payload[1] = static_cast<uint8_t>(data[1] % (kMaxCallMeMaybeEndpoints + 1));
      want = 2 + payload[1] * kEndpointSize;
      for (size_t i = 0; i < payload[1] && 2 + i * kEndpointSize < shaped_size; ++i) {
        payload[2 + i * kEndpointSize] = (data[1] >> (i % 8)) & 1 ? 4 : 6;
      }
    }
    if (data[size - 1] % 4 != 0) {
      if (want > shaped_size)
        std::memset(payload + shaped_size, data[size - 1], want - shaped_size);
      shaped_size = want;
    }
    // Usually also clear the unused bytes of IPv4 addresses, which must be zero.
    if (data[0] & 0x80) {
      size_t first =
          payload[0] == static_cast<uint8_t>(MessageType::kCallMeMaybe) ? 2 : 1 + kTxIdSize;
      for (size_t e = first; e + kEndpointSize <= shaped_size; e += kEndpointSize) {
        if (payload[e] == 4) std::memset(payload + e + 1 + 4, 0, 12);
      }
    }
    CheckPayload(Bytes(payload, shaped_size));
  }
  return 0;
}
