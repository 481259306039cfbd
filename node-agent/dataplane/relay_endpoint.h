// Placeholder endpoints for peers reached through the relay. The WireGuard device only knows UDP
// endpoints; a peer on the relay path is given an address in the discard-only prefix 100::/64
// (RFC 6666, never routed) whose low 32 bits carry the peer's id, and the data plane hands every
// datagram for such an address to the relay instead of the UDP socket.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>

#include "lib/net/ip.h"

namespace tunnelmesh {

inline Endpoint RelayEndpoint(uint32_t peer_id) {
  uint8_t bytes[16] = {0x01, 0x00};
  bytes[12] = static_cast<uint8_t>(peer_id >> 24);
  bytes[13] = static_cast<uint8_t>(peer_id >> 16);
  bytes[14] = static_cast<uint8_t>(peer_id >> 8);
  bytes[15] = static_cast<uint8_t>(peer_id);
  return Endpoint(IpAddress::V6(bytes), 1);
}

inline std::optional<uint32_t> RelayPeerId(const Endpoint& endpoint) {
  const IpAddress& a = endpoint.address();
  if (!a.is_v6() || endpoint.port() != 1) return std::nullopt;
  static const uint8_t kPrefix[12] = {0x01, 0x00};
  if (std::memcmp(a.bytes(), kPrefix, 12) != 0) return std::nullopt;
  const uint8_t* b = a.bytes();
  return uint32_t{b[12]} << 24 | uint32_t{b[13]} << 16 | uint32_t{b[14]} << 8 | b[15];
}

}  // namespace tunnelmesh
