// What the packet filter reads from a packet beyond the fixed IP header (which lib/net/packet.h
// parses): IPv6 extension headers walked to the transport header, TCP and UDP ports and TCP flags,
// ICMPv4/ICMPv6 type, code and echo identifier, and for ICMP errors the addresses and ports of the
// packet they quote. Bounds-checked (lib/base/byte_io.h), no allocation: it runs per packet.
//
// Fragments: the first fragment carries the transport header and is parsed like a whole packet
// (it must hold the fields the filter reads, else it is malformed: RFC 1858's tiny fragments).
// Later fragments have no transport header; they are reported as `later_fragment` and the filter
// lets them pass untracked: without their first fragment, which the filter did decide, the
// receiver cannot reassemble them (the first fragment fixes the ports). IPv4 fragments at offset
// 1 (8 bytes), which could overwrite the TCP flags of the first, are malformed (RFC 1858).
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "lib/filter/filter.h"
#include "lib/net/packet.h"

namespace tunnelmesh::filter {

// IANA protocol numbers the filter knows.
inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr uint8_t kIpProtoIcmpv6 = 58;

// TCP flags (RFC 9293 section 3.1).
inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpAck = 0x10;

enum class IcmpKind : uint8_t {
  kNone,         // Not ICMP.
  kEchoRequest,  // ICMPv4 8, ICMPv6 128.
  kEchoReply,    // ICMPv4 0, ICMPv6 129.
  kError,        // Destination unreachable, time exceeded, parameter problem, packet too big.
  kOther,        // Any other ICMP message.
};

// The transport identity of a packet, or of the packet an ICMP error quotes. Ports are TCP and
// UDP ports; for ICMP echo the identifier is the source port of a request and the destination
// port of a reply, so that a reply's tuple is the request's reversed.
struct Tuple {
  IpAddress source;
  IpAddress destination;
  uint8_t ip_protocol = 0;  // After IPv6 extension headers.
  uint16_t source_port = 0;
  uint16_t destination_port = 0;
  friend bool operator==(const Tuple&, const Tuple&) = default;
};

struct Transport {
  Tuple tuple;
  Protocol protocol = Protocol::kAny;  // kAny for protocols other than TCP, UDP and ICMP.
  bool later_fragment = false;         // No transport header: see above.
  uint8_t tcp_flags = 0;
  IcmpKind icmp = IcmpKind::kNone;
  // For kError: the quoted packet (its source is the sender of the packet that caused the error).
  Tuple quoted;
};

// Parses `packet` (a whole inner IP packet); false when it is malformed: not IPv4 or IPv6 as
// ParseIpHeader accepts, transport header cut short, IPv6 extension header chain longer than 8 or
// cut short, IPv4 fragment at offset 1, ICMP error whose quoted header cannot be read (or is of
// the other family, or itself an ICMP error). Bytes past the IP length are ignored. Thread-safe.
[[nodiscard]] bool ParseTransport(absl::Span<const uint8_t> packet, Transport* out);

// The rule-matching key of a packet's flow.
FlowKey FlowKeyOf(const Transport& t);

}  // namespace tunnelmesh::filter
