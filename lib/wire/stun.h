// STUN Binding messages (RFC 5389), sans-IO: the agent uses them to learn its reflexive (public)
// address from the coordinator's STUN server, and the server uses them to answer. Nothing here
// touches a socket or a clock; callers feed datagrams in and send what the encoders write.
//
// Scope: the Binding method only (RFC 5389 section 3), without authentication. Parsers walk every
// attribute with bounds checks (section 15), verify FINGERPRINT when present (section 15.5), note
// comprehension-required attributes they do not understand (section 7.3.1) and accept, but do not
// verify, MESSAGE-INTEGRITY (section 15.4). Requests from RFC 3489 clients, which predate the magic
// cookie, are recognised and answered the way RFC 5389 section 12.2 says.
//
// Parsing returns a ParseResult rather than an absl::Status: a bad datagram is not an error, it is
// dropped and counted, and no string is built for it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/types/span.h"
#include "lib/net/ip.h"

namespace tunnelmesh::stun {

using Bytes = absl::Span<const uint8_t>;

// RFC 5389 section 6: every message starts with a 20-byte header; the magic cookie follows the
// type and length, then a 96-bit transaction id.
inline constexpr size_t kHeaderSize = 20;
inline constexpr uint32_t kMagicCookie = 0x2112A442;
inline constexpr size_t kTransactionIdSize = 12;
using TransactionId = std::array<uint8_t, kTransactionIdSize>;

// RFC 5389 section 6: the class of a message, carried in bits C1 and C0 of the message type.
enum class MessageClass : uint8_t {
  kRequest = 0b00,
  kIndication = 0b01,
  kSuccessResponse = 0b10,
  kErrorResponse = 0b11,
};

// RFC 5389 section 18.1: the only method defined there, and the only one served here.
inline constexpr uint16_t kMethodBinding = 0x001;

// Attribute types: RFC 5389 section 18.2, and CHANGE-REQUEST from RFC 5780 section 7.2 (the
// RFC 3489 attribute that classic clients always send). Types below 0x8000 are
// comprehension-required, the rest comprehension-optional (section 15).
inline constexpr uint16_t kAttrMappedAddress = 0x0001;
inline constexpr uint16_t kAttrChangeRequest = 0x0003;
inline constexpr uint16_t kAttrUsername = 0x0006;
inline constexpr uint16_t kAttrMessageIntegrity = 0x0008;
inline constexpr uint16_t kAttrErrorCode = 0x0009;
inline constexpr uint16_t kAttrUnknownAttributes = 0x000A;
inline constexpr uint16_t kAttrRealm = 0x0014;
inline constexpr uint16_t kAttrNonce = 0x0015;
inline constexpr uint16_t kAttrXorMappedAddress = 0x0020;
inline constexpr uint16_t kAttrSoftware = 0x8022;
inline constexpr uint16_t kAttrAlternateServer = 0x8023;
inline constexpr uint16_t kAttrFingerprint = 0x8028;

// RFC 5389 section 15.5: FINGERPRINT is the CRC-32 of the message before it, XORed with this.
inline constexpr uint32_t kFingerprintXor = 0x5354554e;
// RFC 5389 sections 15.6 and 15.10: SOFTWARE and the ERROR-CODE reason phrase are at most 763
// bytes (fewer than 128 characters of UTF-8). Longer text given to an encoder is cut to this.
inline constexpr size_t kMaxTextLength = 763;
// RFC 5389 section 15.6: 420 Unknown Attribute, sent with an UNKNOWN-ATTRIBUTES attribute.
inline constexpr uint16_t kErrorUnknownAttribute = 420;
// CHANGE-REQUEST flag bits (RFC 5780 section 7.2).
inline constexpr uint32_t kChangeIpFlag = 0x4;
inline constexpr uint32_t kChangePortFlag = 0x2;

// How many unknown comprehension-required attribute types a parsed request remembers; a request
// with more is still answered with 420, listing the first ones.
inline constexpr size_t kMaxUnknownAttributes = 8;

// Large enough for any message the encoders below write: header, XOR-MAPPED-ADDRESS and
// MAPPED-ADDRESS for IPv6, ERROR-CODE and SOFTWARE with the longest text, UNKNOWN-ATTRIBUTES and
// FINGERPRINT, each with its 4-byte attribute header and padding.
inline constexpr size_t kMaxEncodedSize =
    kHeaderSize + 2 * (4 + 20) + (4 + 4 + kMaxTextLength + 1) + (4 + 2 * kMaxUnknownAttributes) +
    (4 + kMaxTextLength + 1) + (4 + 4);

// Why a datagram was not accepted. kOk means it was.
enum class ParseResult : uint8_t {
  kOk,
  // Shorter than the 20-byte header.
  kTooShort,
  // The first two bits are not zero, or the magic cookie is missing where it is required.
  kNotStun,
  // The length field is not a multiple of 4 or does not match the datagram's size.
  kBadLength,
  // An attribute runs past the end of the message, has the wrong size for its type, or follows
  // FINGERPRINT; or an address attribute names an unknown family.
  kBadAttribute,
  // FINGERPRINT is present and does not match the message.
  kBadFingerprint,
  // Well-formed STUN, but not the method and class the caller asked for (say, an indication).
  kWrongMessageType,
  // A response whose transaction id is not the one the caller is waiting for.
  kWrongTransaction,
  // A success response with neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS.
  kNoMappedAddress,
  // A success response with a comprehension-required attribute this parser does not understand,
  // which RFC 5389 section 7.3.3 says to discard.
  kUnknownAttribute,
};

// A short constant name for logs and tests ("bad_fingerprint"); never allocates.
std::string_view ParseResultName(ParseResult result);

// RFC 5389 section 6: packs a 12-bit method and a class into the 14-bit message type.
uint16_t MessageType(uint16_t method, MessageClass message_class);

// Cheap test run on every datagram of a socket shared with WireGuard: at least a header's worth of
// bytes, the top two bits zero (RFC 5389 section 6) and the magic cookie at bytes 4-7. WireGuard
// messages start with a type byte of 1-4 and three zero bytes, so they never carry the cookie.
// RFC 3489 messages, which have no cookie, are not recognised here.
bool LooksLikeStun(Bytes datagram);

// The CRC-32 (ISO-HDLC, as in zlib and RFC 1952) of `data`. FINGERPRINT is this XOR
// kFingerprintXor over the message up to the FINGERPRINT attribute.
uint32_t Crc32(Bytes data);

// A Binding request as the server sees it.
struct BindingRequest {
  // The four bytes where RFC 5389 puts the magic cookie. Any other value marks an RFC 3489 client
  // whose 128-bit transaction id starts here; the response echoes it (RFC 5389 section 12.2).
  uint32_t magic_cookie = kMagicCookie;
  TransactionId transaction_id{};
  // FINGERPRINT was present; the parser has verified it.
  bool has_fingerprint = false;
  // MESSAGE-INTEGRITY was present. It is not verified: Binding here is unauthenticated, and the
  // attributes after it, except FINGERPRINT, are ignored (RFC 5389 section 15.4).
  bool has_message_integrity = false;
  // The flags of CHANGE-REQUEST (RFC 5780 section 7.2), 0 when absent. A request that asks for a
  // change is listed in unknown_attributes: this server has no alternate address to answer from.
  uint32_t change_request = 0;
  // Comprehension-required attribute types this parser does not understand, in the order they
  // appeared (RFC 5389 section 7.3.1); the server answers such a request with 420 listing them.
  std::array<uint16_t, kMaxUnknownAttributes> unknown_attributes{};
  size_t unknown_attribute_count = 0;

  bool is_rfc3489() const { return magic_cookie != kMagicCookie; }
  absl::Span<const uint16_t> unknown() const {
    return absl::MakeConstSpan(unknown_attributes.data(), unknown_attribute_count);
  }
};

// Parses a Binding request. Accepts RFC 5389 requests and, with a Binding type and a consistent
// length, RFC 3489 requests without the cookie. A well-formed STUN message of another method or
// class gives kWrongMessageType. Never reads outside `datagram`.
ParseResult ParseBindingRequest(Bytes datagram, BindingRequest* out);

// What a Binding response said.
struct BindingResponse {
  MessageClass message_class = MessageClass::kSuccessResponse;
  // Success: the reflexive address, from XOR-MAPPED-ADDRESS when present, else MAPPED-ADDRESS.
  Endpoint mapped_address;
  bool from_xor_mapped_address = false;
  // Error: the code of ERROR-CODE (300-699), or 0 if the error response had none.
  uint16_t error_code = 0;
  bool has_fingerprint = false;
};

// Parses a Binding success or error response to the request with `expected` as its transaction id.
// The magic cookie is required (a client of ours always sends it). For a success response the
// mapped address is required; an error response gives kOk with message_class kErrorResponse.
ParseResult ParseBindingResponse(Bytes datagram, const TransactionId& expected,
                                 BindingResponse* out);

struct EncodeOptions {
  // SOFTWARE (RFC 5389 section 15.10); empty leaves it out. Cut to kMaxTextLength bytes.
  std::string_view software;
  // Append FINGERPRINT (RFC 5389 section 15.5), which lets a receiver tell STUN from other
  // protocols on a shared port.
  bool fingerprint = true;
};

// The encoders write one message into `out` and return its size, or 0 if `out` is smaller than
// kMaxEncodedSize. Padding bytes are zero. With FINGERPRINT, the length field already counts it
// when the CRC is taken, as RFC 5389 section 15.5 requires.

// A Binding request with the given transaction id (which the caller draws at random, RFC 5389
// section 6) and no other attributes than those in `options`.
size_t EncodeBindingRequest(const TransactionId& transaction_id, const EncodeOptions& options,
                            absl::Span<uint8_t> out);

// A Binding success response telling the client `mapped`, the source address its request came
// from (RFC 5389 section 7.3.1.1). RFC 5389 clients get XOR-MAPPED-ADDRESS,
// then MAPPED-ADDRESS for older clients, then SOFTWARE and FINGERPRINT as `options` say. RFC 3489
// clients get their cookie bytes echoed and MAPPED-ADDRESS alone (RFC 5389 section 12.2): they
// reject attributes they do not know below 0x8000 and do not expect padding.
size_t EncodeBindingSuccessResponse(const BindingRequest& request, const Endpoint& mapped,
                                    const EncodeOptions& options, absl::Span<uint8_t> out);

// A Binding error response with ERROR-CODE `error_code` (300-699) and `reason`. With code 420 it
// also carries UNKNOWN-ATTRIBUTES listing request.unknown() (RFC 5389 section 7.3.1.1).
size_t EncodeBindingErrorResponse(const BindingRequest& request, uint16_t error_code,
                                  std::string_view reason, const EncodeOptions& options,
                                  absl::Span<uint8_t> out);

}  // namespace tunnelmesh::stun
