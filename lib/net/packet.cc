#include "lib/net/packet.h"

#include "lib/base/byte_io.h"

namespace tunnelmesh {
namespace {

// Fields are read in header order through the one bounds-checked reader (lib/base/byte_io.h).
// IPv4: RFC 791 section 3.1. IPv6: RFC 8200 section 3.

// Version/IHL is read first, by ParseIpHeader; then 1 byte Type of Service.
constexpr size_t kIpv4TosLength = 1;
// Identification (2), Flags/Fragment Offset (2), Time to Live (1).
constexpr size_t kIpv4IdToTtlLength = 5;
// Header Checksum.
constexpr size_t kIpv4ChecksumLength = 2;
// The rest of the first word after its first byte (Version/Traffic Class/Flow Label).
constexpr size_t kIpv6FirstWordRestLength = 3;
// Hop Limit.
constexpr size_t kIpv6HopLimitLength = 1;

// `reader` stands just after the Version/IHL byte `first_byte`; `packet_size` is the whole buffer.
bool ParseIpv4(ByteReader& reader, size_t packet_size, uint8_t first_byte, IpHeaderInfo* out) {
  if (packet_size < kIpv4MinHeaderLength) return false;
  const size_t header_length = static_cast<size_t>(first_byte & 0x0f) * 4;
  if (header_length < kIpv4MinHeaderLength || header_length > packet_size) return false;
  uint16_t total_length = 0;
  absl::Span<const uint8_t> source;
  absl::Span<const uint8_t> destination;
  if (!reader.Skip(kIpv4TosLength) || !reader.ReadBe16(&total_length) ||
      !reader.Skip(kIpv4IdToTtlLength) || !reader.ReadU8(&out->protocol) ||
      !reader.Skip(kIpv4ChecksumLength) || !reader.ReadBytes(4, &source) ||
      !reader.ReadBytes(4, &destination)) {
    return false;
  }
  if (total_length < header_length || total_length > packet_size) return false;
  out->version = 4;
  out->source = IpAddress::V4(source.data());
  out->destination = IpAddress::V4(destination.data());
  out->total_length = total_length;
  return true;
}

// `reader` stands just after the first byte; `packet_size` is the whole buffer.
bool ParseIpv6(ByteReader& reader, size_t packet_size, IpHeaderInfo* out) {
  uint16_t payload_length = 0;
  absl::Span<const uint8_t> source;
  absl::Span<const uint8_t> destination;
  if (packet_size < kIpv6HeaderLength || !reader.Skip(kIpv6FirstWordRestLength) ||
      !reader.ReadBe16(&payload_length) || !reader.ReadU8(&out->protocol) ||
      !reader.Skip(kIpv6HopLimitLength) || !reader.ReadBytes(16, &source) ||
      !reader.ReadBytes(16, &destination)) {
    return false;
  }
  const size_t total_length = kIpv6HeaderLength + payload_length;
  if (total_length > packet_size) return false;
  out->version = 6;
  out->source = IpAddress::V6(source.data());
  out->destination = IpAddress::V6(destination.data());
  out->total_length = total_length;
  return true;
}

}  // namespace

bool ParseIpHeader(absl::Span<const uint8_t> packet, IpHeaderInfo* out) {
  ByteReader reader(packet);
  uint8_t first_byte = 0;
  if (!reader.ReadU8(&first_byte)) return false;
  switch (first_byte >> 4) {
    case 4:
      return ParseIpv4(reader, packet.size(), first_byte, out);
    case 6:
      return ParseIpv6(reader, packet.size(), out);
    default:
      return false;
  }
}

std::optional<IpAddress> DestinationOf(absl::Span<const uint8_t> packet) {
  IpHeaderInfo info;
  if (!ParseIpHeader(packet, &info)) return std::nullopt;
  return info.destination;
}

std::optional<IpAddress> SourceOf(absl::Span<const uint8_t> packet) {
  IpHeaderInfo info;
  if (!ParseIpHeader(packet, &info)) return std::nullopt;
  return info.source;
}

}  // namespace tunnelmesh
