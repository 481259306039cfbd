// STUN Binding parsing and encoding (RFC 5389). See stun.h for what is covered and why.
#include "lib/wire/stun.h"

#include <algorithm>
#include <cstring>

#include "lib/base/byte_io.h"

namespace tunnelmesh::stun {
namespace {

// RFC 3489 attributes that RFC 5389 section 18.2 reserves. Old servers still put them in
// responses; a client can ignore them because it has no use for them.
constexpr uint16_t kAttrSourceAddress = 0x0004;
constexpr uint16_t kAttrChangedAddress = 0x0005;
constexpr uint16_t kAttrReflectedFrom = 0x000B;

constexpr size_t kIpv4AddressValueSize = 8;
constexpr size_t kIpv6AddressValueSize = 20;
constexpr uint8_t kFamilyIpv4 = 0x01;
constexpr uint8_t kFamilyIpv6 = 0x02;
constexpr size_t kMessageIntegritySize = 20;

constexpr size_t Padded(size_t length) { return (length + 3) & ~size_t{3}; }

// The reflected table of the CRC-32 polynomial 0x04C11DB7 (bit-reversed: 0xEDB88320).
constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

struct Header {
  uint16_t method = 0;
  MessageClass message_class = MessageClass::kRequest;
  uint32_t magic_cookie = 0;
  TransactionId transaction_id{};
};

// The first occurrence of an attribute; later duplicates are ignored (RFC 5389 section 15).
struct Attribute {
  bool present = false;
  Bytes value;
};

enum class Direction { kRequest, kResponse };

// What one pass over the attributes found.
struct Attributes {
  Attribute xor_mapped_address;
  Attribute mapped_address;
  Attribute error_code;
  Attribute change_request;
  bool has_fingerprint = false;
  bool has_message_integrity = false;
  std::array<uint16_t, kMaxUnknownAttributes> unknown{};
  size_t unknown_count = 0;
  // Also counts unknown attributes beyond the array's capacity.
  size_t unknown_total = 0;

  void NoteUnknown(uint16_t type) {
    for (size_t i = 0; i < unknown_count; ++i) {
      if (unknown[i] == type) return;
    }
    ++unknown_total;
    if (unknown_count < unknown.size()) unknown[unknown_count++] = type;
  }
};

void DecodeMessageType(uint16_t type, uint16_t* method, MessageClass* message_class) {
  // RFC 5389 section 6, figure 3: M11..M7 C1 M6..M4 C0 M3..M0.
  *method =
      static_cast<uint16_t>((type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2));
  *message_class = static_cast<MessageClass>(((type >> 4) & 0x1) | ((type >> 7) & 0x2));
}

// Reads the 20-byte header and checks the length against the datagram. A STUN message over UDP
// is exactly one datagram, so trailing bytes make it malformed.
ParseResult ParseHeader(Bytes datagram, Header* out, uint16_t* raw_type) {
  if (datagram.size() < kHeaderSize) return ParseResult::kTooShort;
  ByteReader reader(datagram);
  uint16_t type = 0;
  uint16_t length = 0;
  reader.ReadBe16(&type);
  reader.ReadBe16(&length);
  reader.ReadBe32(&out->magic_cookie);
  reader.ReadArray(&out->transaction_id);
  if (!reader.ok()) return ParseResult::kTooShort;
  if ((type & 0xC000) != 0) return ParseResult::kNotStun;
  // Attributes are padded to 4 bytes, so the last two bits of the length are always zero.
  if (length % 4 != 0 || length != datagram.size() - kHeaderSize) return ParseResult::kBadLength;
  DecodeMessageType(type, &out->method, &out->message_class);
  *raw_type = type;
  return ParseResult::kOk;
}

bool IsKnownComprehensionRequired(uint16_t type, Direction direction) {
  switch (type) {
    case kAttrMappedAddress:
    case kAttrUsername:
    case kAttrMessageIntegrity:
    case kAttrErrorCode:
    case kAttrUnknownAttributes:
    case kAttrRealm:
    case kAttrNonce:
    case kAttrXorMappedAddress:
    case kAttrChangeRequest:
      return true;
    case kAttrSourceAddress:
    case kAttrChangedAddress:
    case kAttrReflectedFrom:
      return direction == Direction::kResponse;
    default:
      return false;
  }
}

// Walks every attribute after the header (RFC 5389 section 15). Fails on an attribute that runs
// past the message, on FINGERPRINT of the wrong size, with a wrong value, or not last, and on
// MESSAGE-INTEGRITY or CHANGE-REQUEST of the wrong size.
ParseResult WalkAttributes(Bytes datagram, Direction direction, Attributes* out) {
  ByteReader reader(datagram.subspan(kHeaderSize));
  size_t offset = kHeaderSize;
  bool after_integrity = false;
  while (reader.remaining() > 0) {
    // RFC 5389 section 15.5: FINGERPRINT MUST be the last attribute.
    if (out->has_fingerprint) return ParseResult::kBadAttribute;
    uint16_t type = 0;
    uint16_t length = 0;
    if (!reader.ReadBe16(&type) || !reader.ReadBe16(&length)) return ParseResult::kBadAttribute;
    const size_t padded = Padded(length);
    if (!reader.Skip(padded)) return ParseResult::kBadAttribute;
    const size_t attribute_offset = offset;
    const Bytes value = datagram.subspan(offset + 4, length);
    offset += 4 + padded;

    if (type == kAttrFingerprint) {
      if (length != 4) return ParseResult::kBadAttribute;
      ByteReader value_reader(value);
      uint32_t fingerprint = 0;
      value_reader.ReadBe32(&fingerprint);
      if ((Crc32(datagram.subspan(0, attribute_offset)) ^ kFingerprintXor) != fingerprint) {
        return ParseResult::kBadFingerprint;
      }
      out->has_fingerprint = true;
      continue;
    }
    // RFC 5389 section 15.4: everything after MESSAGE-INTEGRITY except FINGERPRINT is ignored.
    if (after_integrity) continue;

    Attribute* slot = nullptr;
    switch (type) {
      case kAttrMessageIntegrity:
        if (length != kMessageIntegritySize) return ParseResult::kBadAttribute;
        out->has_message_integrity = true;
        after_integrity = true;
        break;
      case kAttrXorMappedAddress:
        slot = &out->xor_mapped_address;
        break;
      case kAttrMappedAddress:
        slot = &out->mapped_address;
        break;
      case kAttrErrorCode:
        slot = &out->error_code;
        break;
      case kAttrChangeRequest:
        if (length != 4) return ParseResult::kBadAttribute;
        slot = &out->change_request;
        break;
      default:
        if (type < 0x8000 && !IsKnownComprehensionRequired(type, direction)) {
          out->NoteUnknown(type);
        }
        break;
    }
    if (slot != nullptr && !slot->present) {
      slot->present = true;
      slot->value = value;
    }
  }
  return ParseResult::kOk;
}

// MAPPED-ADDRESS (RFC 5389 section 15.1) and XOR-MAPPED-ADDRESS (section 15.2): a reserved byte,
// the family, the port and the address; the XOR form masks the port with the cookie's top 16 bits
// and the address with the cookie followed (for IPv6) by the transaction id.
bool DecodeAddress(Bytes value, bool xored, const TransactionId& transaction_id, Endpoint* out) {
  ByteReader reader(value);
  uint8_t reserved = 0;
  uint8_t family = 0;
  uint16_t port = 0;
  if (!reader.ReadU8(&reserved) || !reader.ReadU8(&family) || !reader.ReadBe16(&port)) {
    return false;
  }
  std::array<uint8_t, 16> mask{};
  mask[0] = kMagicCookie >> 24;
  mask[1] = (kMagicCookie >> 16) & 0xFF;
  mask[2] = (kMagicCookie >> 8) & 0xFF;
  mask[3] = kMagicCookie & 0xFF;
  std::memcpy(mask.data() + 4, transaction_id.data(), transaction_id.size());
  if (xored) port ^= static_cast<uint16_t>(kMagicCookie >> 16);
  if (family == kFamilyIpv4 && value.size() == kIpv4AddressValueSize) {
    std::array<uint8_t, 4> bytes;
    if (!reader.ReadArray(&bytes)) return false;
    if (xored) {
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] ^= mask[i];
    }
    *out = Endpoint(IpAddress::V4(bytes.data()), port);
    return true;
  }
  if (family == kFamilyIpv6 && value.size() == kIpv6AddressValueSize) {
    std::array<uint8_t, 16> bytes;
    if (!reader.ReadArray(&bytes)) return false;
    if (xored) {
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] ^= mask[i];
    }
    *out = Endpoint(IpAddress::V6(bytes.data()), port);
    return true;
  }
  return false;
}

// Cuts UTF-8 text to at most kMaxTextLength bytes without splitting a character.
std::string_view CutText(std::string_view text) {
  if (text.size() <= kMaxTextLength) return text;
  size_t n = kMaxTextLength;
  while (n > 0 && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n);
}

// Writes one message. The caller has checked that `out` holds kMaxEncodedSize bytes, which bounds
// everything these encoders write.
class MessageWriter {
 public:
  MessageWriter(absl::Span<uint8_t> out, uint16_t type, uint32_t magic_cookie,
                const TransactionId& transaction_id)
      : out_(out),
        writer_(out.data()),
        magic_cookie_(magic_cookie),
        transaction_id_(transaction_id) {
    writer_.Be16(type);
    writer_.Be16(0);  // Length, set by Finish().
    writer_.Be32(magic_cookie);
    writer_.Array(transaction_id);
  }

  void Attribute(uint16_t type, const uint8_t* value, size_t length) {
    writer_.Be16(type);
    writer_.Be16(static_cast<uint16_t>(length));
    if (length > 0) writer_.Raw(value, length);
    for (size_t i = length; i < Padded(length); ++i) writer_.U8(0);
  }

  void Text(uint16_t type, std::string_view text) {
    text = CutText(text);
    Attribute(type, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  }

  void Address(uint16_t type, const Endpoint& endpoint, bool xored) {
    const IpAddress& ip = endpoint.address();
    const size_t length = ip.is_v4() ? kIpv4AddressValueSize : kIpv6AddressValueSize;
    uint8_t value[kIpv6AddressValueSize] = {};
    value[1] = ip.is_v4() ? kFamilyIpv4 : kFamilyIpv6;
    uint16_t port = endpoint.port();
    uint8_t mask[16] = {};
    if (xored) {
      port ^= static_cast<uint16_t>(magic_cookie_ >> 16);
      for (int i = 0; i < 4; ++i) mask[i] = static_cast<uint8_t>(magic_cookie_ >> (24 - 8 * i));
      std::memcpy(mask + 4, transaction_id_.data(), transaction_id_.size());
    }
    value[2] = static_cast<uint8_t>(port >> 8);
    value[3] = static_cast<uint8_t>(port);
    for (int i = 0; i < ip.byte_length(); ++i) value[4 + i] = ip.bytes()[i] ^ mask[i];
    Attribute(type, value, length);
  }

  // Sets the length field, appends FINGERPRINT if asked, and returns the message size.
  size_t Finish(bool fingerprint) {
    size_t body = writer_.size() - kHeaderSize + (fingerprint ? 8 : 0);
    out_[2] = static_cast<uint8_t>(body >> 8);
    out_[3] = static_cast<uint8_t>(body);
    if (fingerprint) {
      uint32_t crc = Crc32(Bytes(out_.data(), writer_.size())) ^ kFingerprintXor;
      uint8_t value[4] = {static_cast<uint8_t>(crc >> 24), static_cast<uint8_t>(crc >> 16),
                          static_cast<uint8_t>(crc >> 8), static_cast<uint8_t>(crc)};
      Attribute(kAttrFingerprint, value, sizeof(value));
    }
    return writer_.size();
  }

 private:
  absl::Span<uint8_t> out_;
  ByteWriter writer_;
  uint32_t magic_cookie_;
  const TransactionId& transaction_id_;
};

}  // namespace

std::string_view ParseResultName(ParseResult result) {
  switch (result) {
    case ParseResult::kOk:
      return "ok";
    case ParseResult::kTooShort:
      return "too_short";
    case ParseResult::kNotStun:
      return "not_stun";
    case ParseResult::kBadLength:
      return "bad_length";
    case ParseResult::kBadAttribute:
      return "bad_attribute";
    case ParseResult::kBadFingerprint:
      return "bad_fingerprint";
    case ParseResult::kWrongMessageType:
      return "wrong_message_type";
    case ParseResult::kWrongTransaction:
      return "wrong_transaction";
    case ParseResult::kNoMappedAddress:
      return "no_mapped_address";
    case ParseResult::kUnknownAttribute:
      return "unknown_attribute";
  }
  return "unknown";
}

uint16_t MessageType(uint16_t method, MessageClass message_class) {
  const uint16_t c = static_cast<uint16_t>(message_class);
  return static_cast<uint16_t>((method & 0x000F) | ((method & 0x0070) << 1) |
                               ((method & 0x0F80) << 2) | ((c & 0x1) << 4) | ((c & 0x2) << 7));
}

bool LooksLikeStun(Bytes datagram) {
  if (datagram.size() < kHeaderSize || (datagram[0] & 0xC0) != 0) return false;
  const uint32_t cookie = uint32_t{datagram[4]} << 24 | uint32_t{datagram[5]} << 16 |
                          uint32_t{datagram[6]} << 8 | datagram[7];
  return cookie == kMagicCookie;
}

uint32_t Crc32(Bytes data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (uint8_t byte : data) crc = kCrcTable[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

ParseResult ParseBindingRequest(Bytes datagram, BindingRequest* out) {
  Header header;
  uint16_t raw_type = 0;
  ParseResult result = ParseHeader(datagram, &header, &raw_type);
  if (result != ParseResult::kOk) return result;
  // Without the cookie only an RFC 3489 Binding request is acceptable (RFC 5389 section 12.2);
  // anything else without it is not STUN as far as this server can tell.
  const uint16_t binding_request = MessageType(kMethodBinding, MessageClass::kRequest);
  if (header.magic_cookie != kMagicCookie && raw_type != binding_request) {
    return ParseResult::kNotStun;
  }
  Attributes attributes;
  result = WalkAttributes(datagram, Direction::kRequest, &attributes);
  if (result != ParseResult::kOk) return result;
  if (raw_type != binding_request) return ParseResult::kWrongMessageType;

  *out = BindingRequest();
  out->magic_cookie = header.magic_cookie;
  out->transaction_id = header.transaction_id;
  out->has_fingerprint = attributes.has_fingerprint;
  out->has_message_integrity = attributes.has_message_integrity;
  if (attributes.change_request.present) {
    ByteReader reader(attributes.change_request.value);
    reader.ReadBe32(&out->change_request);
    // RFC 5780 section 7.2: without an alternate address a server cannot honour a change and
    // answers 420, as for an attribute it does not understand.
    if ((out->change_request & (kChangeIpFlag | kChangePortFlag)) != 0) {
      attributes.NoteUnknown(kAttrChangeRequest);
    }
  }
  out->unknown_attributes = attributes.unknown;
  out->unknown_attribute_count = attributes.unknown_count;
  return ParseResult::kOk;
}

ParseResult ParseBindingResponse(Bytes datagram, const TransactionId& expected,
                                 BindingResponse* out) {
  Header header;
  uint16_t raw_type = 0;
  ParseResult result = ParseHeader(datagram, &header, &raw_type);
  if (result != ParseResult::kOk) return result;
  if (header.magic_cookie != kMagicCookie) return ParseResult::kNotStun;
  Attributes attributes;
  result = WalkAttributes(datagram, Direction::kResponse, &attributes);
  if (result != ParseResult::kOk) return result;
  if (header.method != kMethodBinding || (header.message_class != MessageClass::kSuccessResponse &&
                                          header.message_class != MessageClass::kErrorResponse)) {
    return ParseResult::kWrongMessageType;
  }
  if (header.transaction_id != expected) return ParseResult::kWrongTransaction;

  *out = BindingResponse();
  out->message_class = header.message_class;
  out->has_fingerprint = attributes.has_fingerprint;
  if (header.message_class == MessageClass::kErrorResponse) {
    // RFC 5389 section 15.6: 21 reserved bits, the hundreds digit in 3 bits, then 0-99 in a byte.
    if (attributes.error_code.present) {
      ByteReader reader(attributes.error_code.value);
      uint16_t reserved = 0;
      uint8_t hundreds = 0;
      uint8_t number = 0;
      if (!reader.ReadBe16(&reserved) || !reader.ReadU8(&hundreds) || !reader.ReadU8(&number)) {
        return ParseResult::kBadAttribute;
      }
      hundreds &= 0x7;
      if (hundreds < 3 || hundreds > 6 || number > 99) return ParseResult::kBadAttribute;
      out->error_code = static_cast<uint16_t>(hundreds * 100 + number);
    }
    return ParseResult::kOk;
  }
  if (attributes.unknown_total > 0) return ParseResult::kUnknownAttribute;
  if (attributes.xor_mapped_address.present) {
    if (!DecodeAddress(attributes.xor_mapped_address.value, /*xored=*/true, header.transaction_id,
                       &out->mapped_address)) {
      return ParseResult::kBadAttribute;
    }
    out->from_xor_mapped_address = true;
    return ParseResult::kOk;
  }
  if (attributes.mapped_address.present) {
    if (!DecodeAddress(attributes.mapped_address.value, /*xored=*/false, header.transaction_id,
                       &out->mapped_address)) {
      return ParseResult::kBadAttribute;
    }
    return ParseResult::kOk;
  }
  return ParseResult::kNoMappedAddress;
}

size_t EncodeBindingRequest(const TransactionId& transaction_id, const EncodeOptions& options,
                            absl::Span<uint8_t> out) {
  if (out.size() < kMaxEncodedSize) return 0;
  MessageWriter writer(out, MessageType(kMethodBinding, MessageClass::kRequest), kMagicCookie,
                       transaction_id);
  if (!options.software.empty()) writer.Text(kAttrSoftware, options.software);
  return writer.Finish(options.fingerprint);
}

size_t EncodeBindingSuccessResponse(const BindingRequest& request, const Endpoint& mapped,
                                    const EncodeOptions& options, absl::Span<uint8_t> out) {
  if (out.size() < kMaxEncodedSize) return 0;
  MessageWriter writer(out, MessageType(kMethodBinding, MessageClass::kSuccessResponse),
                       request.magic_cookie, request.transaction_id);
  if (request.is_rfc3489()) {
    writer.Address(kAttrMappedAddress, mapped, /*xored=*/false);
    return writer.Finish(/*fingerprint=*/false);
  }
  writer.Address(kAttrXorMappedAddress, mapped, /*xored=*/true);
  writer.Address(kAttrMappedAddress, mapped, /*xored=*/false);
  if (!options.software.empty()) writer.Text(kAttrSoftware, options.software);
  return writer.Finish(options.fingerprint);
}

size_t EncodeBindingErrorResponse(const BindingRequest& request, uint16_t error_code,
                                  std::string_view reason, const EncodeOptions& options,
                                  absl::Span<uint8_t> out) {
  if (out.size() < kMaxEncodedSize) return 0;
  MessageWriter writer(out, MessageType(kMethodBinding, MessageClass::kErrorResponse),
                       request.magic_cookie, request.transaction_id);
  const bool classic = request.is_rfc3489();

  // ERROR-CODE (RFC 5389 section 15.6). RFC 3489 section 11.2.9 wants the reason padded with
  // spaces to a multiple of 4 bytes, because its clients skip attributes without padding.
  reason = CutText(reason);
  uint8_t value[4 + kMaxTextLength + 3] = {};
  value[2] = static_cast<uint8_t>((error_code / 100) & 0x7);
  value[3] = static_cast<uint8_t>(error_code % 100);
  std::memcpy(value + 4, reason.data(), reason.size());
  size_t length = 4 + reason.size();
  if (classic) {
    while (length % 4 != 0) value[length++] = ' ';
  }
  writer.Attribute(kAttrErrorCode, value, length);

  // UNKNOWN-ATTRIBUTES (RFC 5389 section 15.9). RFC 3489 section 11.2.10 repeats one type when the
  // count is odd, so that the value needs no padding.
  if (error_code == kErrorUnknownAttribute && request.unknown_attribute_count > 0) {
    uint8_t types[2 * (kMaxUnknownAttributes + 1)];
    size_t count = std::min(request.unknown_attribute_count, kMaxUnknownAttributes);
    for (size_t i = 0; i < count; ++i) {
      types[2 * i] = static_cast<uint8_t>(request.unknown_attributes[i] >> 8);
      types[2 * i + 1] = static_cast<uint8_t>(request.unknown_attributes[i]);
    }
    if (classic && count % 2 == 1) {
      types[2 * count] = types[2 * count - 2];
      types[2 * count + 1] = types[2 * count - 1];
      ++count;
    }
    writer.Attribute(kAttrUnknownAttributes, types, 2 * count);
  }
  if (classic) return writer.Finish(/*fingerprint=*/false);
  if (!options.software.empty()) writer.Text(kAttrSoftware, options.software);
  return writer.Finish(options.fingerprint);
}

}  // namespace tunnelmesh::stun
