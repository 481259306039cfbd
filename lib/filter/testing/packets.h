// Builds IPv4 and IPv6 packets for the filter's tests, fuzz target and benchmark: fixed headers
// with correct lengths (checksums are zero: the filter does not read them), TCP, UDP and ICMP
// headers, IPv6 extension headers and ICMP errors quoting another packet.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lib/filter/l4.h"
#include "lib/net/ip.h"

namespace tunnelmesh::filter::testing {

using Bytes = std::vector<uint8_t>;

inline IpAddress Ip(std::string_view text) { return IpAddress::Parse(text).value(); }

inline void PutBe16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// An IP packet from `source` to `destination` (same family) carrying `payload` under
// `protocol`. IPv4: `fragment` is the Flags/Fragment Offset field. IPv6: `extensions` go between
// the fixed header and the payload; `protocol` is then the fixed header's Next Header.
inline Bytes IpPacket(const IpAddress& source, const IpAddress& destination, uint8_t protocol,
                      const Bytes& payload, uint16_t fragment = 0, const Bytes& extensions = {}) {
  Bytes b;
  if (source.is_v4()) {
    const size_t total = 20 + payload.size();
    b = {0x45, 0};
    PutBe16(b, static_cast<uint16_t>(total));
    PutBe16(b, 0x1234);  // Identification.
    PutBe16(b, fragment);
    b.push_back(64);
    b.push_back(protocol);
    PutBe16(b, 0);
    b.insert(b.end(), source.bytes(), source.bytes() + 4);
    b.insert(b.end(), destination.bytes(), destination.bytes() + 4);
  } else {
    b = {0x60, 0, 0, 0};
    PutBe16(b, static_cast<uint16_t>(extensions.size() + payload.size()));
    b.push_back(protocol);
    b.push_back(64);
    b.insert(b.end(), source.bytes(), source.bytes() + 16);
    b.insert(b.end(), destination.bytes(), destination.bytes() + 16);
    b.insert(b.end(), extensions.begin(), extensions.end());
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

inline Bytes TcpHeader(uint16_t source_port, uint16_t destination_port, uint8_t flags) {
  Bytes b;
  PutBe16(b, source_port);
  PutBe16(b, destination_port);
  b.insert(b.end(), 8, 0);  // Sequence and acknowledgment numbers.
  b.push_back(0x50);        // Data offset 5 words.
  b.push_back(flags);
  b.insert(b.end(), 6, 0);  // Window, checksum, urgent pointer.
  return b;
}

inline Bytes UdpHeader(uint16_t source_port, uint16_t destination_port) {
  Bytes b;
  PutBe16(b, source_port);
  PutBe16(b, destination_port);
  PutBe16(b, 8);
  PutBe16(b, 0);
  return b;
}

// ICMP message: type, code, checksum, then the 4-byte rest of header `id`/`sequence`, then `body`.
inline Bytes IcmpHeader(uint8_t type, uint8_t code, uint16_t id, const Bytes& body = {}) {
  Bytes b = {type, code, 0, 0};
  PutBe16(b, id);
  PutBe16(b, 1);
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

inline uint8_t IcmpProtocol(const IpAddress& a) {
  return a.is_v4() ? kIpProtoIcmp : kIpProtoIcmpv6;
}

inline Bytes Tcp(const IpAddress& s, const IpAddress& d, uint16_t sport, uint16_t dport,
                 uint8_t flags) {
  return IpPacket(s, d, kIpProtoTcp, TcpHeader(sport, dport, flags));
}

inline Bytes Udp(const IpAddress& s, const IpAddress& d, uint16_t sport, uint16_t dport) {
  return IpPacket(s, d, kIpProtoUdp, UdpHeader(sport, dport));
}

inline Bytes EchoRequest(const IpAddress& s, const IpAddress& d, uint16_t id) {
  return IpPacket(s, d, IcmpProtocol(s), IcmpHeader(s.is_v4() ? 8 : 128, 0, id));
}

inline Bytes EchoReply(const IpAddress& s, const IpAddress& d, uint16_t id) {
  return IpPacket(s, d, IcmpProtocol(s), IcmpHeader(s.is_v4() ? 0 : 129, 0, id));
}

// Destination unreachable (port unreachable) from `s` to `d`, quoting the first 28 (IPv4) or 48
// (IPv6) bytes of `quoted`.
inline Bytes Unreachable(const IpAddress& s, const IpAddress& d, const Bytes& quoted) {
  const size_t keep = s.is_v4() ? 28 : 48;
  const Bytes quote(quoted.begin(), quoted.begin() + std::min(keep, quoted.size()));
  return IpPacket(s, d, IcmpProtocol(s),
                  IcmpHeader(s.is_v4() ? 3 : 1, s.is_v4() ? 3 : 4, 0, quote));
}

}  // namespace tunnelmesh::filter::testing
