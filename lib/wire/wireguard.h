// The four WireGuard message formats (whitepaper section 5.4), byte-compatible with every other
// implementation: handshake initiation (148 bytes), handshake response (92), cookie reply (64) and
// transport data (16-byte header, then ciphertext of a padded packet with a 16-byte tag). All
// integers on the wire are little-endian; the type byte is followed by three reserved zero bytes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "absl/types/span.h"

namespace tunnelmesh::wire {

using Bytes = absl::Span<const uint8_t>;

enum class MessageType : uint8_t {
  kHandshakeInitiation = 1,
  kHandshakeResponse = 2,
  kCookieReply = 3,
  kTransportData = 4,
};

inline constexpr size_t kInitiationSize = 148;
inline constexpr size_t kResponseSize = 92;
inline constexpr size_t kCookieReplySize = 64;
inline constexpr size_t kTransportHeaderSize = 16;
inline constexpr size_t kTagSize = 16;
// The smallest transport message: header and the tag of an empty (keepalive) payload.
inline constexpr size_t kTransportMinSize = kTransportHeaderSize + kTagSize;
// mac1 and mac2 are the last 32 bytes of both handshake messages.
inline constexpr size_t kMacsSize = 32;

struct HandshakeInitiation {
  uint32_t sender_index = 0;
  std::array<uint8_t, 32> unencrypted_ephemeral{};
  std::array<uint8_t, 32 + 16> encrypted_static{};
  std::array<uint8_t, 12 + 16> encrypted_timestamp{};
  std::array<uint8_t, 16> mac1{};
  std::array<uint8_t, 16> mac2{};
};

struct HandshakeResponse {
  uint32_t sender_index = 0;
  uint32_t receiver_index = 0;
  std::array<uint8_t, 32> unencrypted_ephemeral{};
  std::array<uint8_t, 16> encrypted_nothing{};
  std::array<uint8_t, 16> mac1{};
  std::array<uint8_t, 16> mac2{};
};

struct CookieReply {
  uint32_t receiver_index = 0;
  std::array<uint8_t, 24> nonce{};
  std::array<uint8_t, 16 + 16> encrypted_cookie{};
};

struct TransportHeader {
  uint32_t receiver_index = 0;
  uint64_t counter = 0;
};

// The message type of a datagram whose header is well formed (known type, zero reserved bytes) and
// whose size is valid for that type; nullopt for anything else. Cheap: runs on every datagram.
std::optional<MessageType> Classify(Bytes datagram);

// Each parser requires the exact size for the type (transport: at least kTransportMinSize) and a
// well-formed header, and returns false otherwise.
bool Parse(Bytes datagram, HandshakeInitiation* out);
bool Parse(Bytes datagram, HandshakeResponse* out);
bool Parse(Bytes datagram, CookieReply* out);
bool ParseTransportHeader(Bytes datagram, TransportHeader* out);

void Serialize(const HandshakeInitiation& message, uint8_t out[kInitiationSize]);
void Serialize(const HandshakeResponse& message, uint8_t out[kResponseSize]);
void Serialize(const CookieReply& message, uint8_t out[kCookieReplySize]);
void SerializeTransportHeader(const TransportHeader& header, uint8_t out[kTransportHeaderSize]);

// Transport payloads are zero-padded to a multiple of 16 bytes (whitepaper 5.4.6), never past the
// MTU.
inline size_t PaddedLength(size_t packet_length, size_t mtu) {
  size_t padded = (packet_length + 15) & ~size_t{15};
  if (padded > mtu) padded = packet_length > mtu ? packet_length : mtu;
  return padded;
}

}  // namespace tunnelmesh::wire
