// Tests for the STUN Binding codec: RFC 5769 test vectors, round trips through the encoders, RFC
// 3489 clients, and every way a datagram can be cut short or bent out of shape.
#include "lib/wire/stun.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::stun {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  int nibble = -1;
  for (char c : hex) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      continue;
    }
    if (nibble < 0) {
      nibble = v;
    } else {
      out.push_back(static_cast<uint8_t>(nibble << 4 | v));
      nibble = -1;
    }
  }
  return out;
}

// RFC 5769 section 2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
// MESSAGE-INTEGRITY and FINGERPRINT.
const std::vector<uint8_t> kSampleRequest = FromHex(
    "00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
    "80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74"
    "00 24 00 04 6e 00 01 ff"
    "80 29 00 08 93 2f f9 b1 51 26 3b 36"
    "00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20"
    "00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2"
    "80 28 00 04 e5 7a 3b cf");

// RFC 5769 section 2.2: the IPv4 response, mapped address 192.0.2.1 port 32853.
const std::vector<uint8_t> kSampleIpv4Response = FromHex(
    "01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
    "80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20"
    "00 20 00 08 00 01 a1 47 e1 12 a6 43"
    "00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7"
    "80 28 00 04 c0 7d 4c 96");

// RFC 5769 section 2.3: the IPv6 response, mapped address 2001:db8:1234:5678:11:2233:4455:6677
// port 32853.
const std::vector<uint8_t> kSampleIpv6Response = FromHex(
    "01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
    "80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20"
    "00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9"
    "00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41"
    "80 28 00 04 c8 fb 0b 4c");

const TransactionId kSampleId = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
                                 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

// A request as Debian's RFC 3489 client (`stun`, version 0.97) sends it: no magic cookie, a
// 128-bit transaction id, and CHANGE-REQUEST with no flags.
const std::vector<uint8_t> kClassicRequest = FromHex(
    "00 01 00 08 01 9c 5d 20 f8 6a 8a 3e 32 d8 78 19 5e d2 e4 11"
    "00 03 00 04 00 00 00 00");

Bytes AsBytes(const std::vector<uint8_t>& v) { return Bytes(v.data(), v.size()); }

Endpoint Ep(std::string_view text) {
  absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(text);
  EXPECT_TRUE(endpoint.ok()) << text << ": " << endpoint.status();
  return endpoint.ok() ? *endpoint : Endpoint();
}

// Builds arbitrary messages for the malformed cases. `fingerprint_at` inserts a FINGERPRINT
// (computed over what precedes it, with the final length) before attribute number `fingerprint_at`;
// -1 leaves it out.
struct Attr {
  uint16_t type;
  std::vector<uint8_t> value;
};
std::vector<uint8_t> Build(uint16_t type, const std::vector<Attr>& attrs, int fingerprint_at = -1,
                           uint32_t cookie = kMagicCookie, const TransactionId& id = kSampleId) {
  std::vector<uint8_t> out = {static_cast<uint8_t>(type >> 8), static_cast<uint8_t>(type), 0, 0};
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<uint8_t>(cookie >> (8 * i)));
  out.insert(out.end(), id.begin(), id.end());
  size_t fingerprint_offset = 0;
  for (size_t i = 0; i <= attrs.size(); ++i) {
    if (static_cast<int>(i) == fingerprint_at) {
      fingerprint_offset = out.size();
      out.insert(out.end(), {0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0});
    }
    if (i == attrs.size()) break;
    const Attr& a = attrs[i];
    out.push_back(static_cast<uint8_t>(a.type >> 8));
    out.push_back(static_cast<uint8_t>(a.type));
    out.push_back(static_cast<uint8_t>(a.value.size() >> 8));
    out.push_back(static_cast<uint8_t>(a.value.size()));
    out.insert(out.end(), a.value.begin(), a.value.end());
    while (out.size() % 4 != 0) out.push_back(0);
  }
  const size_t length = out.size() - kHeaderSize;
  out[2] = static_cast<uint8_t>(length >> 8);
  out[3] = static_cast<uint8_t>(length);
  if (fingerprint_at >= 0) {
    uint32_t crc = Crc32(Bytes(out.data(), fingerprint_offset)) ^ kFingerprintXor;
    for (int i = 0; i < 4; ++i) {
      out[fingerprint_offset + 4 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    }
  }
  return out;
}

const uint16_t kSuccess = 0x0101;
const std::vector<uint8_t> kXorMapped192 = {0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43};

TEST(StunTest, MessageTypesMatchRfc5389) {
  EXPECT_EQ(MessageType(kMethodBinding, MessageClass::kRequest), 0x0001);
  EXPECT_EQ(MessageType(kMethodBinding, MessageClass::kIndication), 0x0011);
  EXPECT_EQ(MessageType(kMethodBinding, MessageClass::kSuccessResponse), 0x0101);
  EXPECT_EQ(MessageType(kMethodBinding, MessageClass::kErrorResponse), 0x0111);
  // Every method bit lands where figure 3 of section 6 puts it.
  EXPECT_EQ(MessageType(0xFFF, MessageClass::kRequest), 0x3EEF);
  EXPECT_EQ(MessageType(0x000, MessageClass::kErrorResponse), 0x0110);
}

TEST(StunTest, Crc32MatchesTheStandardCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32(Bytes(reinterpret_cast<const uint8_t*>(check.data()), check.size())),
            0xCBF43926u);
  EXPECT_EQ(Crc32(Bytes()), 0u);
}

TEST(StunTest, LooksLikeStunTellsStunFromWireGuard) {
  EXPECT_TRUE(LooksLikeStun(AsBytes(kSampleRequest)));
  EXPECT_TRUE(LooksLikeStun(AsBytes(kSampleIpv4Response)));
  // Each WireGuard message type, at its real size and at the smallest size STUN would accept.
  for (uint8_t type = 1; type <= 4; ++type) {
    for (size_t size : {size_t{20}, size_t{32}, size_t{64}, size_t{92}, size_t{148}}) {
      std::vector<uint8_t> wg(size, 0x42);
      wg[0] = type;
      wg[1] = wg[2] = wg[3] = 0;
      EXPECT_FALSE(LooksLikeStun(AsBytes(wg))) << int{type} << " " << size;
    }
  }
  std::vector<uint8_t> short_message(kSampleRequest.begin(), kSampleRequest.begin() + 19);
  EXPECT_FALSE(LooksLikeStun(AsBytes(short_message)));
  std::vector<uint8_t> top_bits = kSampleRequest;
  top_bits[0] |= 0x40;
  EXPECT_FALSE(LooksLikeStun(AsBytes(top_bits)));
  EXPECT_FALSE(LooksLikeStun(AsBytes(kClassicRequest)));
  EXPECT_FALSE(LooksLikeStun(Bytes()));
}

TEST(StunTest, ParsesRfc5769SampleRequest) {
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(kSampleRequest), &request), ParseResult::kOk);
  EXPECT_EQ(request.transaction_id, kSampleId);
  EXPECT_FALSE(request.is_rfc3489());
  EXPECT_TRUE(request.has_fingerprint);
  EXPECT_TRUE(request.has_message_integrity);
  EXPECT_EQ(request.change_request, 0u);
  // PRIORITY (0x0024, RFC 8445) is comprehension-required and not part of Binding as served here;
  // ICE-CONTROLLED (0x8029) is optional and passes silently.
  EXPECT_THAT(request.unknown(), ElementsAre(0x0024));
}

TEST(StunTest, ParsesRfc5769SampleIpv4Response) {
  BindingResponse response;
  ASSERT_EQ(ParseBindingResponse(AsBytes(kSampleIpv4Response), kSampleId, &response),
            ParseResult::kOk);
  EXPECT_EQ(response.message_class, MessageClass::kSuccessResponse);
  EXPECT_TRUE(response.from_xor_mapped_address);
  EXPECT_TRUE(response.has_fingerprint);
  EXPECT_EQ(response.mapped_address, Ep("192.0.2.1:32853"));
}

TEST(StunTest, ParsesRfc5769SampleIpv6Response) {
  BindingResponse response;
  ASSERT_EQ(ParseBindingResponse(AsBytes(kSampleIpv6Response), kSampleId, &response),
            ParseResult::kOk);
  EXPECT_TRUE(response.from_xor_mapped_address);
  EXPECT_TRUE(response.has_fingerprint);
  EXPECT_EQ(response.mapped_address, Ep("[2001:db8:1234:5678:11:2233:4455:6677]:32853"));
}

TEST(StunTest, SampleResponsesAreNotRequestsAndRequestIsNotAResponse) {
  BindingRequest request;
  EXPECT_EQ(ParseBindingRequest(AsBytes(kSampleIpv4Response), &request),
            ParseResult::kWrongMessageType);
  BindingResponse response;
  EXPECT_EQ(ParseBindingResponse(AsBytes(kSampleRequest), kSampleId, &response),
            ParseResult::kWrongMessageType);
}

TEST(StunTest, RejectsResponseToAnotherTransaction) {
  TransactionId other = kSampleId;
  other[11] ^= 1;
  BindingResponse response;
  EXPECT_EQ(ParseBindingResponse(AsBytes(kSampleIpv4Response), other, &response),
            ParseResult::kWrongTransaction);
}

TEST(StunTest, AnyChangedByteBeforeTheFingerprintIsCaught) {
  // Byte 4 onwards: the cookie, the id and the attributes. Bytes 0-3 are type and length, whose
  // changes other checks catch first.
  for (const auto* vector : {&kSampleRequest, &kSampleIpv4Response, &kSampleIpv6Response}) {
    const size_t fingerprint_offset = vector->size() - 8;
    for (size_t i = 8; i < fingerprint_offset; ++i) {
      std::vector<uint8_t> bent = *vector;
      bent[i] ^= 0x01;
      BindingRequest request;
      BindingResponse response;
      ParseResult r1 = ParseBindingRequest(AsBytes(bent), &request);
      ParseResult r2 = ParseBindingResponse(AsBytes(bent), kSampleId, &response);
      // Flipping a bit in an attribute length can break the walk before the fingerprint.
      EXPECT_NE(r1, ParseResult::kOk) << i;
      EXPECT_NE(r2, ParseResult::kOk) << i;
    }
    std::vector<uint8_t> bent = *vector;
    bent.back() ^= 0x80;
    BindingResponse response;
    EXPECT_EQ(ParseBindingResponse(AsBytes(bent), kSampleId, &response),
              ParseResult::kBadFingerprint);
  }
}

TEST(StunTest, EveryTruncationIsRejected) {
  for (const auto* vector :
       {&kSampleRequest, &kSampleIpv4Response, &kSampleIpv6Response, &kClassicRequest}) {
    for (size_t n = 0; n < vector->size(); ++n) {
      Bytes cut(vector->data(), n);
      BindingRequest request;
      BindingResponse response;
      EXPECT_NE(ParseBindingRequest(cut, &request), ParseResult::kOk) << n;
      EXPECT_NE(ParseBindingResponse(cut, kSampleId, &response), ParseResult::kOk) << n;
      EXPECT_EQ(ParseBindingRequest(cut, &request),
                n < kHeaderSize ? ParseResult::kTooShort : ParseResult::kBadLength)
          << n;
    }
  }
}

TEST(StunTest, LengthFieldThatLiesIsRejected) {
  // The header length agrees with the datagram, but an attribute claims more than is there.
  std::vector<uint8_t> message = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}});
  message[kHeaderSize + 3] = 12;
  BindingResponse response;
  EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response),
            ParseResult::kBadAttribute);
  // A last attribute header that claims 256 bytes of value and has none.
  message = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}});
  message.resize(message.size() + 4, 0);
  message[message.size() - 4] = 0x80;
  message[message.size() - 3] = 0x22;
  message[message.size() - 2] = 0x01;
  message[message.size() - 1] = 0x00;
  message[3] += 4;
  EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response),
            ParseResult::kBadAttribute);
  // Length not a multiple of 4, and trailing bytes after the message.
  message = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}});
  message.push_back(0);
  EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response), ParseResult::kBadLength);
  message[3] += 1;
  EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response), ParseResult::kBadLength);
  message.insert(message.end(), 3, 0);
  EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response), ParseResult::kBadLength);
}

TEST(StunTest, FingerprintMustBeLastAndFourBytes) {
  BindingResponse response;
  std::vector<uint8_t> last = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}}, 1);
  ASSERT_EQ(ParseBindingResponse(AsBytes(last), kSampleId, &response), ParseResult::kOk);
  EXPECT_TRUE(response.has_fingerprint);
  std::vector<uint8_t> not_last = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}}, 0);
  EXPECT_EQ(ParseBindingResponse(AsBytes(not_last), kSampleId, &response),
            ParseResult::kBadAttribute);
  std::vector<uint8_t> long_fingerprint = Build(
      kSuccess, {{kAttrXorMappedAddress, kXorMapped192}, {kAttrFingerprint, {1, 2, 3, 4, 5}}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(long_fingerprint), kSampleId, &response),
            ParseResult::kBadAttribute);
}

TEST(StunTest, AttributesAfterMessageIntegrityAreIgnored) {
  BindingResponse response;
  std::vector<uint8_t> mapped_after =
      Build(kSuccess, {{kAttrMessageIntegrity, std::vector<uint8_t>(20, 0xAA)},
                       {kAttrXorMappedAddress, kXorMapped192}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(mapped_after), kSampleId, &response),
            ParseResult::kNoMappedAddress);
  std::vector<uint8_t> short_integrity =
      Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192},
                       {kAttrMessageIntegrity, std::vector<uint8_t>(16, 0xAA)}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(short_integrity), kSampleId, &response),
            ParseResult::kBadAttribute);
}

TEST(StunTest, ResponseAddressRules) {
  BindingResponse response;
  // MAPPED-ADDRESS alone, as an RFC 3489 server would answer.
  std::vector<uint8_t> mapped_only =
      Build(kSuccess, {{kAttrMappedAddress, {0x00, 0x01, 0x1f, 0x90, 10, 1, 2, 3}}});
  ASSERT_EQ(ParseBindingResponse(AsBytes(mapped_only), kSampleId, &response), ParseResult::kOk);
  EXPECT_FALSE(response.from_xor_mapped_address);
  EXPECT_EQ(response.mapped_address, Ep("10.1.2.3:8080"));
  // Both: XOR-MAPPED-ADDRESS wins, whatever the order.
  std::vector<uint8_t> both =
      Build(kSuccess, {{kAttrMappedAddress, {0x00, 0x01, 0x1f, 0x90, 10, 1, 2, 3}},
                       {kAttrXorMappedAddress, kXorMapped192}});
  ASSERT_EQ(ParseBindingResponse(AsBytes(both), kSampleId, &response), ParseResult::kOk);
  EXPECT_EQ(response.mapped_address, Ep("192.0.2.1:32853"));
  // The first of two XOR-MAPPED-ADDRESS attributes counts (RFC 5389 section 15).
  std::vector<uint8_t> twice = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192},
                                                {kAttrXorMappedAddress, {0, 1, 0, 0, 0, 0, 0, 0}}});
  ASSERT_EQ(ParseBindingResponse(AsBytes(twice), kSampleId, &response), ParseResult::kOk);
  EXPECT_EQ(response.mapped_address, Ep("192.0.2.1:32853"));
  // Unknown family, and sizes that do not match the family.
  for (const std::vector<uint8_t>& value :
       {std::vector<uint8_t>{0, 3, 0, 1, 1, 2, 3, 4}, std::vector<uint8_t>{0, 1, 0, 1, 1, 2, 3},
        std::vector<uint8_t>(20, 0x01), std::vector<uint8_t>{0, 2, 0, 1, 1, 2, 3, 4},
        std::vector<uint8_t>{}}) {
    std::vector<uint8_t> bad = Build(kSuccess, {{kAttrXorMappedAddress, value}});
    EXPECT_EQ(ParseBindingResponse(AsBytes(bad), kSampleId, &response), ParseResult::kBadAttribute);
  }
  std::vector<uint8_t> none = Build(kSuccess, {{kAttrSoftware, {'x'}}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(none), kSampleId, &response),
            ParseResult::kNoMappedAddress);
}

TEST(StunTest, ResponseWithUnknownRequiredAttributeIsDiscarded) {
  BindingResponse response;
  std::vector<uint8_t> unknown =
      Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192}, {0x0030, {1, 2, 3, 4}}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(unknown), kSampleId, &response),
            ParseResult::kUnknownAttribute);
  // Optional attributes, and the RFC 3489 attributes old servers add, are fine.
  std::vector<uint8_t> tolerated = Build(kSuccess, {{kAttrXorMappedAddress, kXorMapped192},
                                                    {0x802b, {0, 1, 0, 1, 1, 2, 3, 4}},
                                                    {0x0004, {0, 1, 0, 1, 1, 2, 3, 4}},
                                                    {0x0005, {0, 1, 0, 1, 1, 2, 3, 4}}});
  EXPECT_EQ(ParseBindingResponse(AsBytes(tolerated), kSampleId, &response), ParseResult::kOk);
}

TEST(StunTest, RequestRoundTrip) {
  const TransactionId id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  std::vector<uint8_t> buffer(kMaxEncodedSize);
  for (bool fingerprint : {false, true}) {
    for (std::string_view software : {"", "tunnelmesh", "abcde"}) {
      size_t n = EncodeBindingRequest(id, {software, fingerprint}, absl::MakeSpan(buffer));
      ASSERT_GT(n, 0u);
      Bytes message(buffer.data(), n);
      EXPECT_EQ(n % 4, 0u);
      EXPECT_EQ(n, kHeaderSize + (software.empty() ? 0 : 4 + (software.size() + 3) / 4 * 4) +
                       (fingerprint ? 8 : 0));
      EXPECT_TRUE(LooksLikeStun(message));
      BindingRequest request;
      ASSERT_EQ(ParseBindingRequest(message, &request), ParseResult::kOk);
      EXPECT_EQ(request.transaction_id, id);
      EXPECT_EQ(request.has_fingerprint, fingerprint);
      EXPECT_FALSE(request.has_message_integrity);
      EXPECT_THAT(request.unknown(), IsEmpty());
    }
  }
  // The bare request is exactly the 20-byte header of RFC 5389 section 6.
  size_t n = EncodeBindingRequest(id, {"", false}, absl::MakeSpan(buffer));
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin(), buffer.begin() + n),
            FromHex("0001 0000 2112a442 0102030405060708090a0b0c"));
}

TEST(StunTest, SoftwareIsCutToItsLimitOnACharacterBoundary) {
  const TransactionId id{};
  std::vector<uint8_t> buffer(kMaxEncodedSize);
  // 762 ASCII bytes and then a two-byte character that would end past 763.
  std::string software(762, 'a');
  software += "\xc3\xa9";
  software += std::string(100, 'b');
  size_t n = EncodeBindingRequest(id, {software, true}, absl::MakeSpan(buffer));
  ASSERT_GT(n, 0u);
  EXPECT_EQ(buffer[kHeaderSize + 2] << 8 | buffer[kHeaderSize + 3], 762);
  BindingRequest request;
  EXPECT_EQ(ParseBindingRequest(Bytes(buffer.data(), n), &request), ParseResult::kOk);
}

TEST(StunTest, EncodersRefuseSmallBuffers) {
  std::vector<uint8_t> buffer(kMaxEncodedSize - 1);
  BindingRequest request;
  EXPECT_EQ(EncodeBindingRequest(kSampleId, {}, absl::MakeSpan(buffer)), 0u);
  EXPECT_EQ(EncodeBindingSuccessResponse(request, Ep("1.2.3.4:5"), {}, absl::MakeSpan(buffer)), 0u);
  EXPECT_EQ(EncodeBindingErrorResponse(request, 420, "x", {}, absl::MakeSpan(buffer)), 0u);
}

TEST(StunTest, SuccessResponseRoundTripIpv4AndIpv6) {
  std::vector<uint8_t> buffer(kMaxEncodedSize);
  for (const char* text : {"203.0.113.7:51820", "0.0.0.0:1", "255.255.255.255:65535",
                           "[2001:db8::1]:3478", "[fe80::1:2:3:4]:40000", "[::ffff:1.2.3.4]:9"}) {
    BindingRequest request;
    request.transaction_id = kSampleId;
    const Endpoint mapped = Ep(text);
    size_t n =
        EncodeBindingSuccessResponse(request, mapped, {"tm-test", true}, absl::MakeSpan(buffer));
    ASSERT_GT(n, 0u) << text;
    Bytes message(buffer.data(), n);
    EXPECT_TRUE(LooksLikeStun(message));
    BindingResponse response;
    ASSERT_EQ(ParseBindingResponse(message, kSampleId, &response), ParseResult::kOk) << text;
    EXPECT_TRUE(response.from_xor_mapped_address);
    EXPECT_TRUE(response.has_fingerprint);
    EXPECT_EQ(response.mapped_address, mapped) << text;

    // MAPPED-ADDRESS carries the same address in the clear, for RFC 3489-era clients.
    const size_t xor_size = 4 + (mapped.address().is_v4() ? 8 : 20);
    ASSERT_EQ(buffer[kHeaderSize + xor_size + 1], kAttrMappedAddress) << text;
    std::vector<uint8_t> mapped_only(buffer.begin(), buffer.begin() + kHeaderSize);
    mapped_only.insert(mapped_only.end(), buffer.begin() + kHeaderSize + xor_size,
                       buffer.begin() + kHeaderSize + 2 * xor_size);
    mapped_only[2] = 0;
    mapped_only[3] = static_cast<uint8_t>(xor_size);
    ASSERT_EQ(ParseBindingResponse(AsBytes(mapped_only), kSampleId, &response), ParseResult::kOk);
    EXPECT_FALSE(response.from_xor_mapped_address);
    EXPECT_EQ(response.mapped_address, mapped) << text;
  }
}

TEST(StunTest, ResponseToTheSampleRequestMatchesTheSampleAddressEncoding) {
  // Answering RFC 5769's request with its mapped address gives the XOR-MAPPED-ADDRESS bytes of
  // its sample response (sections 2.2 and 2.3).
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(kSampleRequest), &request), ParseResult::kOk);
  std::vector<uint8_t> buffer(kMaxEncodedSize);
  size_t n = EncodeBindingSuccessResponse(request, Ep("192.0.2.1:32853"), {"", false},
                                          absl::MakeSpan(buffer));
  ASSERT_EQ(n, kHeaderSize + 12 + 12);
  EXPECT_EQ(
      std::vector<uint8_t>(buffer.begin() + kHeaderSize, buffer.begin() + kHeaderSize + 12),
      std::vector<uint8_t>(kSampleIpv4Response.begin() + 36, kSampleIpv4Response.begin() + 48));
  n = EncodeBindingSuccessResponse(request, Ep("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
                                   {"", false}, absl::MakeSpan(buffer));
  ASSERT_EQ(n, kHeaderSize + 24 + 24);
  EXPECT_EQ(
      std::vector<uint8_t>(buffer.begin() + kHeaderSize, buffer.begin() + kHeaderSize + 24),
      std::vector<uint8_t>(kSampleIpv6Response.begin() + 36, kSampleIpv6Response.begin() + 60));
}

TEST(StunTest, UnknownComprehensionRequiredAttributesAreNotedOnce) {
  std::vector<uint8_t> message = Build(0x0001,
                                       {{0x0030, {1}},
                                        {0x8123, {2}},
                                        {0x0030, {3}},
                                        {kAttrUsername, {'u', 's', 'e', 'r'}},
                                        {0x7fff, {}}},
                                       5);
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(message), &request), ParseResult::kOk);
  EXPECT_THAT(request.unknown(), ElementsAre(0x0030, 0x7fff));
  EXPECT_TRUE(request.has_fingerprint);

  // More than fit: the first kMaxUnknownAttributes are kept.
  std::vector<Attr> many;
  for (uint16_t t = 0x0040; t < 0x0040 + 2 * kMaxUnknownAttributes; ++t) many.push_back({t, {}});
  message = Build(0x0001, many);
  ASSERT_EQ(ParseBindingRequest(AsBytes(message), &request), ParseResult::kOk);
  EXPECT_EQ(request.unknown_attribute_count, kMaxUnknownAttributes);
  EXPECT_EQ(request.unknown()[0], 0x0040);
}

TEST(StunTest, ErrorResponse420ListsTheUnknownAttributes) {
  std::vector<uint8_t> message = Build(0x0001, {{0x0030, {}}, {0x0031, {}}, {0x0032, {}}});
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(message), &request), ParseResult::kOk);
  std::vector<uint8_t> buffer(kMaxEncodedSize);
  size_t n = EncodeBindingErrorResponse(request, kErrorUnknownAttribute, "Unknown Attribute",
                                        {"tm", true}, absl::MakeSpan(buffer));
  ASSERT_GT(n, 0u);
  BindingResponse response;
  ASSERT_EQ(ParseBindingResponse(Bytes(buffer.data(), n), kSampleId, &response), ParseResult::kOk);
  EXPECT_EQ(response.message_class, MessageClass::kErrorResponse);
  EXPECT_EQ(response.error_code, 420);
  EXPECT_TRUE(response.has_fingerprint);
  // Type 0x0111, then ERROR-CODE: 0 0 4 20 "Unknown Attribute" (17 bytes, padded to 20).
  EXPECT_EQ(buffer[0], 0x01);
  EXPECT_EQ(buffer[1], 0x11);
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin() + 20, buffer.begin() + 28),
            FromHex("0009 0015 0000 0414"));
  // UNKNOWN-ATTRIBUTES: three types, six bytes, padded to eight.
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin() + 48, buffer.begin() + 60),
            FromHex("000a 0006 0030 0031 0032 0000"));
}

TEST(StunTest, ErrorCodeParsing) {
  const uint16_t kError = 0x0111;
  BindingResponse response;
  std::vector<uint8_t> message = Build(kError, {{kAttrErrorCode, {0, 0, 4, 0, 'B', 'a', 'd'}}});
  ASSERT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response), ParseResult::kOk);
  EXPECT_EQ(response.error_code, 400);
  message = Build(kError, {});
  ASSERT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response), ParseResult::kOk);
  EXPECT_EQ(response.error_code, 0);
  for (const std::vector<uint8_t>& value :
       {std::vector<uint8_t>{0, 0, 4}, std::vector<uint8_t>{0, 0, 2, 0},
        std::vector<uint8_t>{0, 0, 7, 0}, std::vector<uint8_t>{0, 0, 4, 100}}) {
    message = Build(kError, {{kAttrErrorCode, value}});
    EXPECT_EQ(ParseBindingResponse(AsBytes(message), kSampleId, &response),
              ParseResult::kBadAttribute);
  }
}

TEST(StunTest, OtherMessagesAreTold) {
  BindingRequest request;
  // A Binding indication (used as a keepalive) is STUN but not a request.
  std::vector<uint8_t> indication = Build(0x0011, {});
  EXPECT_EQ(ParseBindingRequest(AsBytes(indication), &request), ParseResult::kWrongMessageType);
  // Another method's request.
  std::vector<uint8_t> allocate = Build(0x0003, {});
  EXPECT_EQ(ParseBindingRequest(AsBytes(allocate), &request), ParseResult::kWrongMessageType);
  // Without the cookie, only a Binding request is taken for STUN.
  std::vector<uint8_t> classic_indication = Build(0x0011, {}, -1, 0x01020304);
  EXPECT_EQ(ParseBindingRequest(AsBytes(classic_indication), &request), ParseResult::kNotStun);
  std::vector<uint8_t> top_bits = Build(0x0001, {});
  top_bits[0] = 0x80;
  EXPECT_EQ(ParseBindingRequest(AsBytes(top_bits), &request), ParseResult::kNotStun);
  BindingResponse response;
  std::vector<uint8_t> classic_response =
      Build(kSuccess, {{kAttrMappedAddress, kXorMapped192}}, -1, 0x01020304);
  EXPECT_EQ(ParseBindingResponse(AsBytes(classic_response), kSampleId, &response),
            ParseResult::kNotStun);
}

TEST(StunTest, Rfc3489RequestGetsAClassicResponse) {
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(kClassicRequest), &request), ParseResult::kOk);
  EXPECT_TRUE(request.is_rfc3489());
  EXPECT_EQ(request.magic_cookie, 0x019c5d20u);
  EXPECT_EQ(request.change_request, 0u);
  EXPECT_THAT(request.unknown(), IsEmpty());

  std::vector<uint8_t> buffer(kMaxEncodedSize);
  size_t n = EncodeBindingSuccessResponse(request, Ep("127.0.0.1:29823"), {"tm", true},
                                          absl::MakeSpan(buffer));
  // Header echoing all 16 id bytes, then MAPPED-ADDRESS alone: no XOR form, SOFTWARE or
  // FINGERPRINT, which RFC 3489 clients do not know.
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin(), buffer.begin() + n),
            FromHex("0101 000c 019c5d20 f86a8a3e32d878195ed2e411"
                    "0001 0008 0001 747f 7f000001"));
}

TEST(StunTest, Rfc3489ChangeRequestIsRefusedWithA420ItCanRead) {
  std::vector<uint8_t> message = kClassicRequest;
  message.back() = kChangeIpFlag | kChangePortFlag;
  BindingRequest request;
  ASSERT_EQ(ParseBindingRequest(AsBytes(message), &request), ParseResult::kOk);
  EXPECT_EQ(request.change_request, 6u);
  EXPECT_THAT(request.unknown(), ElementsAre(kAttrChangeRequest));

  std::vector<uint8_t> buffer(kMaxEncodedSize);
  size_t n = EncodeBindingErrorResponse(request, kErrorUnknownAttribute, "Unknown", {"tm", true},
                                        absl::MakeSpan(buffer));
  // ERROR-CODE with the 7-byte reason padded with a space to 8, and UNKNOWN-ATTRIBUTES listing
  // CHANGE-REQUEST twice (RFC 3489 section 11.2.10); no padding bytes anywhere.
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin(), buffer.begin() + n),
            FromHex("0111 0018 019c5d20 f86a8a3e32d878195ed2e411"
                    "0009 000c 0000 0414 556e6b6e 6f776e20"
                    "000a 0004 0003 0003"));
}

TEST(StunTest, ChangeRequestOfTheWrongSizeIsMalformed) {
  std::vector<uint8_t> message = Build(0x0001, {{kAttrChangeRequest, {0, 0, 0, 0, 0, 0, 0, 0}}});
  BindingRequest request;
  EXPECT_EQ(ParseBindingRequest(AsBytes(message), &request), ParseResult::kBadAttribute);
}

TEST(StunTest, ParseResultNamesAreDistinct) {
  std::vector<std::string_view> names;
  for (int r = 0; r <= static_cast<int>(ParseResult::kUnknownAttribute); ++r) {
    names.push_back(ParseResultName(static_cast<ParseResult>(r)));
  }
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_NE(names[i], "unknown");
    for (size_t j = i + 1; j < names.size(); ++j) EXPECT_NE(names[i], names[j]);
  }
}

}  // namespace
}  // namespace tunnelmesh::stun
