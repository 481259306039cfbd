// Bounds-checked reading of the fixed header of inner IP packets, exactly as a TUN device hands
// them over (no packet-information prefix) and as they come out of decryption. The data plane uses
// it per packet to route by destination (TUN -> peer) and to check the source against the sending
// peer's allowed IPs (peer -> TUN), so it never allocates, never builds strings and never trusts a
// length field without checking it against the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/types/span.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

// Sizes of the fixed headers: RFC 791 section 3.1 (IHL of 5 words) and RFC 8200 section 3.
inline constexpr size_t kIpv4MinHeaderLength = 20;
inline constexpr size_t kIpv6HeaderLength = 40;

// What the fixed IP header says about a packet.
struct IpHeaderInfo {
  // 4 or 6.
  uint8_t version = 0;
  // IPv4 Protocol, or IPv6 Next Header of the fixed header (extension headers are not walked).
  uint8_t protocol = 0;
  IpAddress source;
  IpAddress destination;
  // The length the header declares for the whole packet: IPv4 Total Length, or IPv6 Payload Length
  // plus the 40-byte fixed header. Never more than the buffer; it may be less, in which case the
  // bytes past it are padding that the caller should trim (as WireGuard does) before forwarding.
  size_t total_length = 0;
};

// Parses the fixed IPv4 or IPv6 header at the start of `packet` into `*out` and returns true;
// returns false, leaving `*out` unspecified, if the packet is too short for its header, has a
// version other than 4 or 6, has an IPv4 IHL below 5 or an IPv4 header longer than its Total
// Length, or declares a length larger than `packet`. IPv6 jumbograms (Payload Length 0, RFC 2675)
// are reported as 40 bytes long. Does not allocate. Thread-safe.
[[nodiscard]] bool ParseIpHeader(absl::Span<const uint8_t> packet, IpHeaderInfo* out);

// The destination address of a packet that ParseIpHeader accepts; nullopt for any packet it would
// reject. Does not allocate. Thread-safe.
std::optional<IpAddress> DestinationOf(absl::Span<const uint8_t> packet);

// The source address of a packet that ParseIpHeader accepts; nullopt for any packet it would
// reject. Does not allocate. Thread-safe.
std::optional<IpAddress> SourceOf(absl::Span<const uint8_t> packet);

}  // namespace tunnelmesh
