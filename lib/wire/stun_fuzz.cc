// Fuzz target: the STUN Binding parsers on arbitrary bytes. Parsing must never read out of bounds;
// whatever parses as a request must produce responses that parse back to the same answer; and
// LooksLikeStun must agree with the parsers about the magic cookie.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lib/wire/stun.h"

using namespace tunnelmesh;
using namespace tunnelmesh::stun;

namespace {

// Shapes raw input toward messages the parsers accept past the header: top bits clear, the cookie
// in place (usually), a length that matches, and sometimes a FINGERPRINT at the end (right or
// deliberately wrong), so the attribute walk, the fingerprint check and the address decoders run
// often.
size_t Shape(const uint8_t* data, size_t size, uint8_t* out, size_t capacity) {
  size_t n = size < capacity - 8 ? size : capacity - 8;
  std::memcpy(out, data, n);
  if (n < kHeaderSize) return n;
  const uint8_t control = data[0];
  n = kHeaderSize + (n - kHeaderSize) / 4 * 4;
  out[0] &= 0x3F;
  if (control & 0x01) {
    // Binding request, success or error response: the types the parsers look into.
    static const uint16_t kTypes[] = {0x0001, 0x0101, 0x0111, 0x0011};
    const uint16_t type = kTypes[(control >> 1) & 0x3];
    out[0] = static_cast<uint8_t>(type >> 8);
    out[1] = static_cast<uint8_t>(type);
  }
  if (!(control & 0x08)) {
    out[4] = 0x21;
    out[5] = 0x12;
    out[6] = 0xA4;
    out[7] = 0x42;
  }
  const bool fingerprint = control & 0x10;
  const size_t length = n - kHeaderSize + (fingerprint ? 8 : 0);
  out[2] = static_cast<uint8_t>(length >> 8);
  out[3] = static_cast<uint8_t>(length);
  if (fingerprint) {
    const uint32_t crc = Crc32(Bytes(out, n)) ^ kFingerprintXor;
    uint8_t* attribute = out + n;
    attribute[0] = 0x80;  // FINGERPRINT, 4 bytes.
    attribute[1] = 0x28;
    attribute[2] = 0x00;
    attribute[3] = 0x04;
    for (int i = 0; i < 4; ++i) attribute[4 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    // Now and then a fingerprint that does not match.
    if (control & 0x20) attribute[7] ^= 0x01;
    n += 8;
  }
  return n;
}

void Check(Bytes input) {
  const bool looks_like_stun = LooksLikeStun(input);
  TransactionId id{};
  if (input.size() >= kHeaderSize) std::memcpy(id.data(), input.data() + 8, id.size());
  // Mostly the message's own id, so the success path runs; sometimes another.
  if (input.size() % 5 == 0) id[0] ^= 0x01;

  BindingRequest request;
  const ParseResult request_result = ParseBindingRequest(input, &request);
  BindingResponse response;
  const ParseResult response_result = ParseBindingResponse(input, id, &response);
  if (ParseResultName(request_result) == "unknown") std::abort();
  if (ParseResultName(response_result) == "unknown") std::abort();
  // A response needs the cookie, and so does a request that is not RFC 3489.
  if (response_result == ParseResult::kOk && !looks_like_stun) std::abort();
  if (request_result == ParseResult::kOk && looks_like_stun == request.is_rfc3489()) std::abort();
  if (request_result != ParseResult::kOk) return;
  if (request.unknown_attribute_count > kMaxUnknownAttributes) std::abort();

  // Answer it both ways and read the answers back, as a client would.
  static uint8_t buffer[kMaxEncodedSize];
  const Endpoint mapped = input.size() % 2 == 0 ? Endpoint(IpAddress::V4(input.data() + 8), 40000)
                                                : Endpoint(IpAddress::V6(input.data() + 4), 1);
  size_t n = EncodeBindingSuccessResponse(request, mapped, {"fuzz", true}, buffer);
  if (n == 0 || n > kMaxEncodedSize) std::abort();
  if (!request.is_rfc3489()) {
    BindingResponse answer;
    if (ParseBindingResponse(Bytes(buffer, n), request.transaction_id, &answer) !=
        ParseResult::kOk) {
      std::abort();
    }
    if (!(answer.mapped_address == mapped) || !answer.from_xor_mapped_address) std::abort();
  }
  n = EncodeBindingErrorResponse(request, kErrorUnknownAttribute, "Unknown Attribute",
                                 {"fuzz", true}, buffer);
  if (n == 0 || n > kMaxEncodedSize) std::abort();
  if (!request.is_rfc3489()) {
    BindingResponse answer;
    if (ParseBindingResponse(Bytes(buffer, n), request.transaction_id, &answer) !=
            ParseResult::kOk ||
        answer.error_code != kErrorUnknownAttribute) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Check(Bytes(data, size));
  uint8_t shaped[2048];
  const size_t n = Shape(data, size, shaped, sizeof(shaped));
  Check(Bytes(shaped, n));
  return 0;
}
