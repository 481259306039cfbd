// Discovery messages: the sealed ping, pong and call-me-maybe that agents exchange to find and keep
// direct UDP paths (ARCHITECTURE.md, "Wire protocols"). They share the agent's UDP socket with
// WireGuard and are told apart by their first bytes.
//
// Datagram layout (all sizes in bytes):
//
//   magic (6)  sender public key (32)  nonce (24)  crypto_box(payload) (payload size + 16)
//
// The magic is "TM" followed by U+1F50D in UTF-8. Its first byte, 'T' (0x54), is never a
// WireGuard message type (1-4), so no datagram is both. The box is libsodium's crypto_box
// (X25519, XSalsa20-Poly1305) from the sender's WireGuard static private key to the recipient's
// WireGuard static public key; both are Curve25519 keys that crypto_box uses as they are. The
// sender's key is in the clear so the recipient can find the peer (and its precomputed BoxKey)
// before spending an X25519 operation; authenticity comes from the box, which only the holders of
// the two private keys can make.
//
// Payload: one type byte, then a body of exact size (no trailing bytes, so every accepted payload
// has exactly one encoding):
//   1 Ping        transaction id (12)
//   2 Pong        transaction id (12), observed source endpoint (19)
//   3 CallMeMaybe count (1, at most 16), then `count` endpoints (19 each)
// An endpoint is family (1: 4 or 6), address (16: an IPv4 address fills the first 4 bytes and the
// rest must be zero), port (2, big-endian, never 0).
//
// Nothing here is replay-protected: a captured ping can be sent again. Pongs are safe to act on
// because they must echo a fresh random transaction id the recipient is waiting for; a received
// ping proves only that the peer sent it at some time (PathSelector treats it as a hint).
//
// All functions are thread-safe (they keep no state). None allocates, except that opening a
// CallMeMaybe fills its vector of endpoints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

#include "absl/types/span.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh::disco {

inline constexpr std::array<uint8_t, 6> kMagic = {'T', 'M', 0xF0, 0x9F, 0x94, 0x8D};
inline constexpr size_t kNonceSize = 24;   // crypto_box_NONCEBYTES
inline constexpr size_t kBoxTagSize = 16;  // crypto_box_MACBYTES
inline constexpr size_t kHeaderSize = kMagic.size() + kKeySize + kNonceSize;  // 62
inline constexpr size_t kTxIdSize = 12;
inline constexpr size_t kEndpointSize = 1 + 16 + 2;
// CallMeMaybe carries at most this many endpoints: enough for every interface address, the STUN
// reflexive address and port-mapped addresses of one member, while keeping the datagram (384
// bytes) far below any path MTU so it is never fragmented.
inline constexpr size_t kMaxCallMeMaybeEndpoints = 16;
inline constexpr size_t kMaxPayloadSize = 1 + 1 + kMaxCallMeMaybeEndpoints * kEndpointSize;  // 306
// The smallest box: a one-byte payload (which does not parse; an empty CallMeMaybe is 2 bytes and
// a Ping 13, but sizes between are authentic-but-malformed rather than a size error).
inline constexpr size_t kMinDatagramSize = kHeaderSize + kBoxTagSize + 1;                // 79
inline constexpr size_t kMaxDatagramSize = kHeaderSize + kBoxTagSize + kMaxPayloadSize;  // 384

using Bytes = absl::Span<const uint8_t>;
using TxId = std::array<uint8_t, kTxIdSize>;

enum class MessageType : uint8_t { kPing = 1, kPong = 2, kCallMeMaybe = 3 };

// "Are you there?" to one candidate endpoint of the peer. The recipient answers with a Pong to the
// datagram's source address.
struct Ping {
  TxId tx_id{};
  friend bool operator==(const Ping&, const Ping&) = default;
};

// The answer to a Ping: its transaction id and the source endpoint the Ping came from, as the
// answering side saw it (the pinger's reflexive address on that path).
struct Pong {
  TxId tx_id{};
  Endpoint observed;
  friend bool operator==(const Pong&, const Pong&) = default;
};

// "Probe me now": sent through the coordinator so that both sides send pings at the same time,
// which opens both NATs (hole punching). Lists the sender's current candidate endpoints.
struct CallMeMaybe {
  std::vector<Endpoint> endpoints;
  friend bool operator==(const CallMeMaybe&, const CallMeMaybe&) = default;
};

using Message = std::variant<Ping, Pong, CallMeMaybe>;

// Why Open rejected a datagram, for the agent's drop counters.
enum class OpenError : uint8_t {
  kNone,
  kNotDisco,      // Does not start with kMagic (it may be a WireGuard message).
  kBadSize,       // Shorter than kMinDatagramSize or longer than kMaxDatagramSize.
  kNotAuthentic,  // The box does not open: wrong recipient, tampered, or a low-order sender key.
  kBadPayload,    // Authentic, but the payload is not a well-formed message.
};
const char* OpenErrorName(OpenError error);

// A crypto_box key precomputed from our private key and one peer's public key (crypto_box_beforenm:
// X25519 then HSalsa20). Deriving it costs one X25519; sealing and opening with it cost none, so an
// agent that keeps one per peer pays the X25519 once instead of on every ping and pong. Move-only;
// wiped on destruction.
class BoxKey {
 public:
  BoxKey() = default;
  // False when `peer` is a low-order point (the shared secret would be all zero).
  [[nodiscard]] static bool Derive(const SecretKey& my_private, const PublicKey& peer, BoxKey* out);
  // crypto_box_BEFORENMBYTES (32) bytes, for the crypto_box_*_afternm functions.
  const uint8_t* data() const { return key_.data(); }
  // The peer the key was derived for; OpenWithKey accepts only datagrams whose sender field names
  // it, because the box itself does not cover the cleartext header.
  const PublicKey& peer() const { return peer_; }

 private:
  SecretKey key_;
  PublicKey peer_;
};

// True when `datagram` starts with kMagic: it is a discovery message (perhaps a malformed one) and
// never a WireGuard message. Cheap; runs on every datagram.
bool IsDiscoMessage(Bytes datagram);

// Reads the sender's public key from a datagram whose magic and size are valid, without any
// cryptography, so the caller can drop datagrams from unknown peers cheaply and pick the BoxKey.
// The key is not authenticated until OpenWithKey succeeds. A non-canonical key (bit 255 set, or a
// value of at least 2^255 - 19) fails as kNotAuthentic: X25519 ignores bit 255 and reduces modulo
// the prime, so such a key would open boxes meant for its canonical twin under another name.
[[nodiscard]] bool PeekSender(Bytes datagram, PublicKey* sender, OpenError* error = nullptr);

// The size of the sealed datagram for `message`, or 0 when the message cannot be encoded (more
// than kMaxCallMeMaybeEndpoints endpoints, or an endpoint with port 0).
size_t SealedSize(const Message& message);

// Seals `message` from `from_private` (whose public key is `from_public`; the caller keeps the two
// consistent) to `to` into `out`, with a fresh random nonce. Returns the datagram's size, or 0
// when `out` is too small, the message cannot be encoded, or `to` is a low-order point.
size_t Seal(const SecretKey& from_private, const PublicKey& from_public, const PublicKey& to,
            const Message& message, absl::Span<uint8_t> out);

// The same with a precomputed key for (from_private, to).
size_t SealWithKey(const BoxKey& key, const PublicKey& from_public, const Message& message,
                   absl::Span<uint8_t> out);

// Opens a datagram addressed to `my_private`. On success fills the authenticated `sender` and
// `out`. Returns false for anything that is not an authentic, well-formed discovery message to us;
// `error` (if given) then says why, and `sender` and `out` are unspecified. Never reads outside
// `datagram`.
[[nodiscard]] bool Open(const SecretKey& my_private, Bytes datagram, PublicKey* sender,
                        Message* out, OpenError* error = nullptr);

// The same with a precomputed key for (my_private, the sender PeekSender returned). A datagram
// whose sender field names anyone else fails as kNotAuthentic.
[[nodiscard]] bool OpenWithKey(const BoxKey& key, Bytes datagram, Message* out,
                               OpenError* error = nullptr);

// Lower level, for Seal and Open and for tests and fuzzers: the plaintext payload codec, and
// sealing of an already serialized payload (1..kMaxPayloadSize bytes; returns 0 otherwise).
size_t SerializePayload(const Message& message, absl::Span<uint8_t> out);
[[nodiscard]] bool ParsePayload(Bytes payload, Message* out);
size_t SealPayloadWithKey(const BoxKey& key, const PublicKey& from_public, Bytes payload,
                          absl::Span<uint8_t> out);

}  // namespace tunnelmesh::disco
