#include "lib/net/packet.h"

namespace tunnelmesh {
namespace {

// Offsets within the fixed headers (RFC 791 section 3.1, RFC 8200 section 3).
constexpr size_t kIpv4TotalLengthOffset = 2;
constexpr size_t kIpv4ProtocolOffset = 9;
constexpr size_t kIpv4SourceOffset = 12;
constexpr size_t kIpv4DestinationOffset = 16;
constexpr size_t kIpv6PayloadLengthOffset = 4;
constexpr size_t kIpv6NextHeaderOffset = 6;
constexpr size_t kIpv6SourceOffset = 8;
constexpr size_t kIpv6DestinationOffset = 24;

// A minimal reader over an untrusted buffer: every access checks its bounds, multi-byte fields are
// read big-endian (network order) byte by byte, so no alignment or host byte order is assumed.
class Reader {
 public:
  explicit Reader(absl::Span<const uint8_t> data) : data_(data) {}

  size_t size() const { return data_.size(); }

  bool U8(size_t offset, uint8_t* out) const {
    if (offset >= data_.size()) return false;
    *out = data_[offset];
    return true;
  }

  bool Be16(size_t offset, uint16_t* out) const {
    if (offset > data_.size() || data_.size() - offset < 2) return false;
    *out = static_cast<uint16_t>((data_[offset] << 8) | data_[offset + 1]);
    return true;
  }

  // Points `*out` at `length` bytes starting at `offset`.
  bool Bytes(size_t offset, size_t length, const uint8_t** out) const {
    if (offset > data_.size() || data_.size() - offset < length) return false;
    *out = data_.data() + offset;
    return true;
  }

 private:
  absl::Span<const uint8_t> data_;
};

bool ParseIpv4(const Reader& reader, uint8_t first_byte, IpHeaderInfo* out) {
  if (reader.size() < kIpv4MinHeaderLength) return false;
  const size_t header_length = static_cast<size_t>(first_byte & 0x0f) * 4;
  if (header_length < kIpv4MinHeaderLength || header_length > reader.size()) return false;
  uint16_t total_length;
  const uint8_t* source;
  const uint8_t* destination;
  if (!reader.Be16(kIpv4TotalLengthOffset, &total_length) ||
      !reader.U8(kIpv4ProtocolOffset, &out->protocol) ||
      !reader.Bytes(kIpv4SourceOffset, 4, &source) ||
      !reader.Bytes(kIpv4DestinationOffset, 4, &destination)) {
    return false;
  }
  if (total_length < header_length || total_length > reader.size()) return false;
  out->version = 4;
  out->source = IpAddress::V4(source);
  out->destination = IpAddress::V4(destination);
  out->total_length = total_length;
  return true;
}

bool ParseIpv6(const Reader& reader, IpHeaderInfo* out) {
  uint16_t payload_length;
  const uint8_t* source;
  const uint8_t* destination;
  if (reader.size() < kIpv6HeaderLength ||
      !reader.Be16(kIpv6PayloadLengthOffset, &payload_length) ||
      !reader.U8(kIpv6NextHeaderOffset, &out->protocol) ||
      !reader.Bytes(kIpv6SourceOffset, 16, &source) ||
      !reader.Bytes(kIpv6DestinationOffset, 16, &destination)) {
    return false;
  }
  const size_t total_length = kIpv6HeaderLength + payload_length;
  if (total_length > reader.size()) return false;
  out->version = 6;
  out->source = IpAddress::V6(source);
  out->destination = IpAddress::V6(destination);
  out->total_length = total_length;
  return true;
}

}  // namespace

bool ParseIpHeader(absl::Span<const uint8_t> packet, IpHeaderInfo* out) {
  const Reader reader(packet);
  uint8_t first_byte;
  if (!reader.U8(0, &first_byte)) return false;
  switch (first_byte >> 4) {
    case 4:
      return ParseIpv4(reader, first_byte, out);
    case 6:
      return ParseIpv6(reader, out);
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
