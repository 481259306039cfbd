#include "lib/filter/l4.h"

#include "lib/base/byte_io.h"

namespace tunnelmesh::filter {
namespace {

// RFC 8200 section 4: the extension headers walked to find the transport header.
constexpr uint8_t kIpv6HopByHop = 0;
constexpr uint8_t kIpv6Routing = 43;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint8_t kIpv6DestinationOptions = 60;
constexpr int kMaxExtensionHeaders = 8;

// ICMPv4 types (RFC 792) and ICMPv6 types (RFC 4443).
constexpr uint8_t kIcmpv4EchoReply = 0;
constexpr uint8_t kIcmpv4Unreachable = 3;
constexpr uint8_t kIcmpv4EchoRequest = 8;
constexpr uint8_t kIcmpv4TimeExceeded = 11;
constexpr uint8_t kIcmpv4ParameterProblem = 12;
constexpr uint8_t kIcmpv6Unreachable = 1;
constexpr uint8_t kIcmpv6PacketTooBig = 2;
constexpr uint8_t kIcmpv6TimeExceeded = 3;
constexpr uint8_t kIcmpv6ParameterProblem = 4;
constexpr uint8_t kIcmpv6EchoRequest = 128;
constexpr uint8_t kIcmpv6EchoReply = 129;

constexpr size_t kTcpMinHeaderLength = 20;

IcmpKind KindOf(bool v6, uint8_t type) {
  if (!v6) {
    switch (type) {
      case kIcmpv4EchoRequest:
        return IcmpKind::kEchoRequest;
      case kIcmpv4EchoReply:
        return IcmpKind::kEchoReply;
      case kIcmpv4Unreachable:
      case kIcmpv4TimeExceeded:
      case kIcmpv4ParameterProblem:
        return IcmpKind::kError;
      default:
        return IcmpKind::kOther;
    }
  }
  switch (type) {
    case kIcmpv6EchoRequest:
      return IcmpKind::kEchoRequest;
    case kIcmpv6EchoReply:
      return IcmpKind::kEchoReply;
    case kIcmpv6Unreachable:
    case kIcmpv6PacketTooBig:
    case kIcmpv6TimeExceeded:
    case kIcmpv6ParameterProblem:
      return IcmpKind::kError;
    default:
      return IcmpKind::kOther;
  }
}

bool IsIcmp(bool v6, uint8_t ip_protocol) {
  return v6 ? ip_protocol == kIpProtoIcmpv6 : ip_protocol == kIpProtoIcmp;
}

// `reader` stands at the first header after the fixed IPv6 header, whose Next Header is `next`.
// Leaves it at the transport header; sets `*protocol` to its number.
bool WalkIpv6(ByteReader& reader, uint8_t next, uint8_t* protocol, bool* later_fragment) {
  for (int i = 0;; ++i) {
    if (next != kIpv6HopByHop && next != kIpv6Routing && next != kIpv6Fragment &&
        next != kIpv6DestinationOptions) {
      *protocol = next;
      return true;
    }
    if (i == kMaxExtensionHeaders) return false;
    uint8_t following = 0;
    uint8_t length = 0;
    if (!reader.ReadU8(&following) || !reader.ReadU8(&length)) return false;
    if (next == kIpv6Fragment) {
      // RFC 8200 section 4.5: 8 bytes; the offset is the upper 13 bits of bytes 2..3.
      uint16_t offset_flags = 0;
      if (!reader.ReadBe16(&offset_flags) || !reader.Skip(4)) return false;
      if ((offset_flags >> 3) != 0) {
        *protocol = following;
        *later_fragment = true;
        return true;
      }
    } else if (!reader.Skip(size_t{length} * 8 + 6)) {  // Length in 8 bytes, not counting 8.
      return false;
    }
    next = following;
  }
}

// The quoted header of an ICMP error: IP header and the first 8 bytes of its payload (RFC 792,
// RFC 4443 section 2.4). Its length fields are not checked against the quote, which is cut.
bool ParseQuoted(absl::Span<const uint8_t> quote, bool v6, Tuple* out) {
  ByteReader reader(quote);
  uint8_t first = 0;
  if (!reader.ReadU8(&first) || (first >> 4) != (v6 ? 6 : 4)) return false;
  absl::Span<const uint8_t> source;
  absl::Span<const uint8_t> destination;
  if (!v6) {
    const size_t header_length = size_t{first & 0x0fu} * 4;
    uint16_t fragment = 0;
    if (header_length < kIpv4MinHeaderLength || !reader.Skip(5) || !reader.ReadBe16(&fragment) ||
        !reader.Skip(1) || !reader.ReadU8(&out->ip_protocol) || !reader.Skip(2) ||
        !reader.ReadBytes(4, &source) || !reader.ReadBytes(4, &destination) ||
        !reader.Skip(header_length - kIpv4MinHeaderLength)) {
      return false;
    }
    if ((fragment & 0x1fff) != 0) return false;  // A later fragment quotes no ports.
    out->source = IpAddress::V4(source.data());
    out->destination = IpAddress::V4(destination.data());
  } else {
    uint8_t next = 0;
    bool later_fragment = false;
    if (!reader.Skip(5) || !reader.ReadU8(&next) || !reader.Skip(1) ||
        !reader.ReadBytes(16, &source) || !reader.ReadBytes(16, &destination) ||
        !WalkIpv6(reader, next, &out->ip_protocol, &later_fragment) || later_fragment) {
      return false;
    }
    out->source = IpAddress::V6(source.data());
    out->destination = IpAddress::V6(destination.data());
  }
  if (out->ip_protocol == kIpProtoTcp || out->ip_protocol == kIpProtoUdp) {
    return reader.ReadBe16(&out->source_port) && reader.ReadBe16(&out->destination_port);
  }
  if (IsIcmp(v6, out->ip_protocol)) {
    uint8_t type = 0;
    uint16_t id = 0;
    if (!reader.ReadU8(&type) || !reader.Skip(3) || !reader.ReadBe16(&id)) return false;
    switch (KindOf(v6, type)) {
      case IcmpKind::kEchoRequest:
        out->source_port = id;
        return true;
      case IcmpKind::kEchoReply:
        out->destination_port = id;
        return true;
      default:
        return false;  // Errors about errors are never sent (RFC 1122 3.2.2); others untracked.
    }
  }
  return true;  // Another protocol: tracked by addresses alone.
}

}  // namespace

bool ParseTransport(absl::Span<const uint8_t> packet, Transport* out) {
  IpHeaderInfo ip;
  if (!ParseIpHeader(packet, &ip)) return false;
  *out = Transport{};
  out->tuple.source = ip.source;
  out->tuple.destination = ip.destination;
  const bool v6 = ip.version == 6;
  ByteReader reader(packet.first(ip.total_length));
  uint8_t protocol = 0;
  if (!v6) {
    // RFC 791: Flags and Fragment Offset at bytes 6..7; the header is IHL words long.
    const size_t header_length = size_t{packet[0] & 0x0fu} * 4;
    uint16_t fragment = 0;
    if (!reader.Skip(6) || !reader.ReadBe16(&fragment) || !reader.Skip(header_length - 8)) {
      return false;
    }
    const uint16_t offset = fragment & 0x1fff;
    if (offset == 1) return false;  // RFC 1858 section 3.2.
    out->later_fragment = offset != 0;
    protocol = ip.protocol;
  } else if (!reader.Skip(kIpv6HeaderLength) ||
             !WalkIpv6(reader, ip.protocol, &protocol, &out->later_fragment)) {
    return false;
  }
  out->tuple.ip_protocol = protocol;
  if (protocol == kIpProtoTcp) {
    out->protocol = Protocol::kTcp;
  } else if (protocol == kIpProtoUdp) {
    out->protocol = Protocol::kUdp;
  } else if (IsIcmp(v6, protocol)) {
    out->protocol = Protocol::kIcmp;
  }
  if (out->later_fragment) return true;

  Tuple& t = out->tuple;
  switch (out->protocol) {
    case Protocol::kTcp: {
      uint8_t data_offset = 0;
      if (!reader.ReadBe16(&t.source_port) || !reader.ReadBe16(&t.destination_port) ||
          !reader.Skip(8) || !reader.ReadU8(&data_offset) || !reader.ReadU8(&out->tcp_flags) ||
          !reader.Skip(6)) {
        return false;
      }
      const size_t header_length = static_cast<size_t>(data_offset >> 4) * 4;
      return header_length >= kTcpMinHeaderLength &&
             header_length - kTcpMinHeaderLength <= reader.remaining();
    }
    case Protocol::kUdp:
      return reader.ReadBe16(&t.source_port) && reader.ReadBe16(&t.destination_port) &&
             reader.Skip(4);
    case Protocol::kIcmp: {
      uint8_t type = 0;
      uint16_t id = 0;
      if (!reader.ReadU8(&type) || !reader.Skip(3)) return false;
      out->icmp = KindOf(v6, type);
      switch (out->icmp) {
        case IcmpKind::kEchoRequest:
          return reader.ReadBe16(&t.source_port) && reader.Skip(2);
        case IcmpKind::kEchoReply:
          return reader.ReadBe16(&t.destination_port) && reader.Skip(2);
        case IcmpKind::kError: {
          absl::Span<const uint8_t> quote;
          return reader.Skip(4) && reader.ReadBytes(reader.remaining(), &quote) &&
                 ParseQuoted(quote, v6, &out->quoted);
        }
        default:
          return reader.ReadBe16(&id) && reader.Skip(2);
      }
    }
    case Protocol::kAny:
      break;
  }
  return true;
}

FlowKey FlowKeyOf(const Transport& t) {
  FlowKey key;
  key.source = t.tuple.source;
  key.destination = t.tuple.destination;
  key.protocol = t.protocol;
  if (t.protocol == Protocol::kTcp || t.protocol == Protocol::kUdp) {
    key.destination_port = t.tuple.destination_port;
  }
  return key;
}

}  // namespace tunnelmesh::filter
