#include "lib/dns/message.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

IpAddress Ip(std::string_view text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.ok()) << ip.status();
  return ip.ok() ? *ip : IpAddress();
}

// Appends `name` ("bob.mesh", no escapes) uncompressed in wire form.
void PutName(std::vector<uint8_t>& out, std::string_view name) {
  while (!name.empty()) {
    const size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    out.push_back(static_cast<uint8_t>(label.size()));
    out.insert(out.end(), label.begin(), label.end());
    name.remove_prefix(dot == std::string_view::npos ? name.size() : dot + 1);
  }
  out.push_back(0);
}

// Appends bytes written as a mix of numbers and characters.
void Append(std::vector<uint8_t>& out, std::initializer_list<int> bytes) {
  for (int b : bytes) out.push_back(static_cast<uint8_t>(b));
}

void Put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void Put32(std::vector<uint8_t>& out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v >> 16));
  Put16(out, static_cast<uint16_t>(v));
}

// A header with the given counts (ID 0x1234, flags 0).
std::vector<uint8_t> HeaderBytes(uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar,
                                 uint16_t flags = 0) {
  std::vector<uint8_t> out;
  for (uint16_t v : {uint16_t{0x1234}, flags, qd, an, ns, ar}) Put16(out, v);
  return out;
}

// A header and the question "bob.mesh A IN" (at offset 12, 14 bytes).
std::vector<uint8_t> WithQuestion(uint16_t an, uint16_t ns, uint16_t ar) {
  auto out = HeaderBytes(1, an, ns, ar);
  PutName(out, "bob.mesh");
  Put16(out, kTypeA);
  Put16(out, kClassIn);
  return out;
}

Record MakeRecord(std::string name, uint16_t type, RData data, uint32_t ttl = 5) {
  Record record;
  record.name = std::move(name);
  record.type = type;
  record.ttl = ttl;
  record.data = std::move(data);
  return record;
}

Message Query(std::string name, uint16_t type = kTypeA) {
  Message message;
  message.header.id = 0xbeef;
  message.header.rd = true;
  message.questions.push_back({std::move(name), type, kClassIn});
  return message;
}

// Encodes and decodes `message`, expecting to get it back unchanged.
void ExpectRoundTrip(const Message& message) {
  auto bytes = Encode(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, message);
}

std::string DecodeError(const std::vector<uint8_t>& bytes) {
  auto decoded = Decode(bytes);
  EXPECT_FALSE(decoded.ok());
  if (decoded.ok()) return "";
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(decoded.status().message());
}

std::string EncodeError(const Message& message, size_t max_size = kMaxMessageSize) {
  auto bytes = Encode(message, max_size);
  EXPECT_FALSE(bytes.ok());
  if (bytes.ok()) return "";
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(bytes.status().message());
}

// ---- Decoding real messages -------------------------------------------------------------------

// `dig @100.64.0.1 bob.mesh A +edns` as dig 9.18 sends it: RD and AD set, and an OPT record
// (UDP size 1232) carrying a client cookie (option 10).
TEST(DecodeTest, DigQueryWithEdns) {
  const std::vector<uint8_t> bytes = {
      0xa3, 0xf1, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  // header
      0x03, 'b',  'o',  'b',  0x04, 'm',  'e',  's',  'h',  0x00,              // bob.mesh
      0x00, 0x01, 0x00, 0x01,                                                  // A IN
      0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,        // OPT 1232
      0x00, 0x0a, 0x00, 0x08, 0x5c, 0x2e, 0x6b, 0x09, 0x11, 0x7d, 0x80, 0x3f,  // cookie
  };
  uint16_t id = 0;
  auto message = Decode(bytes, &id);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(id, 0xa3f1);
  EXPECT_EQ(message->header.id, 0xa3f1);
  EXPECT_FALSE(message->header.qr);
  EXPECT_EQ(message->header.opcode, kOpcodeQuery);
  EXPECT_TRUE(message->header.rd);
  EXPECT_TRUE(message->header.ad);
  EXPECT_FALSE(message->header.aa || message->header.tc || message->header.ra ||
               message->header.cd);
  EXPECT_EQ(message->header.rcode, Rcode::kNoError);
  EXPECT_THAT(message->questions, ElementsAre(Question{"bob.mesh", kTypeA, kClassIn}));
  EXPECT_TRUE(message->answers.empty());
  EXPECT_TRUE(message->authority.empty());
  EXPECT_TRUE(message->additional.empty());
  ASSERT_TRUE(message->edns.has_value());
  EXPECT_EQ(message->edns->udp_size, 1232);
  EXPECT_EQ(message->edns->version, 0);
  EXPECT_FALSE(message->edns->dnssec_ok);
}

// A response to "www.bob.mesh A" whose names are all pointers into the question or into
// earlier RDATA: a CNAME to bob.mesh, its A record, and an NS record for mesh in authority.
TEST(DecodeTest, ResponseWithCompressionPointers) {
  const std::vector<uint8_t> bytes = {
      0x12,
      0x34,
      0x85,
      0x80,
      0x00,
      0x01,
      0x00,
      0x02,
      0x00,
      0x01,
      0x00,
      0x00,  // QR AA RD RA
      // 12: www.bob.mesh A IN ("bob" at 16, "mesh" at 20).
      0x03,
      'w',
      'w',
      'w',
      0x03,
      'b',
      'o',
      'b',
      0x04,
      'm',
      'e',
      's',
      'h',
      0x00,
      0x00,
      0x01,
      0x00,
      0x01,
      // www.bob.mesh CNAME bob.mesh, TTL 5.
      0xc0,
      0x0c,
      0x00,
      0x05,
      0x00,
      0x01,
      0x00,
      0x00,
      0x00,
      0x05,
      0x00,
      0x02,
      0xc0,
      0x10,
      // bob.mesh A 100.64.0.7.
      0xc0,
      0x10,
      0x00,
      0x01,
      0x00,
      0x01,
      0x00,
      0x00,
      0x00,
      0x05,
      0x00,
      0x04,
      100,
      64,
      0,
      7,
      // mesh NS ns.mesh, TTL 300.
      0xc0,
      0x14,
      0x00,
      0x02,
      0x00,
      0x01,
      0x00,
      0x00,
      0x01,
      0x2c,
      0x00,
      0x05,
      0x02,
      'n',
      's',
      0xc0,
      0x14,
  };
  auto message = Decode(bytes);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_TRUE(message->header.qr);
  EXPECT_TRUE(message->header.aa);
  EXPECT_TRUE(message->header.ra);
  EXPECT_THAT(message->questions, ElementsAre(Question{"www.bob.mesh", kTypeA, kClassIn}));
  EXPECT_THAT(message->answers,
              ElementsAre(MakeRecord("www.bob.mesh", kTypeCname, std::string("bob.mesh")),
                          MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.7"))));
  EXPECT_THAT(message->authority,
              ElementsAre(MakeRecord("mesh", kTypeNs, std::string("ns.mesh"), 300)));
  EXPECT_FALSE(message->edns.has_value());

  // Written again, it is as small as it was: every repeated name is a pointer.
  auto encoded = Encode(*message);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(*encoded, bytes);
}

TEST(DecodeTest, EscapesDotsAndBackslashesInLabels) {
  auto bytes = HeaderBytes(1, 0, 0, 0);
  Append(bytes, {3, 'a', '.', 'b', 3, 'c', '\\', 'd', 4, 'm', 'e', 's', 'h', 0});
  Put16(bytes, kTypeTxt);
  Put16(bytes, kClassIn);
  auto message = Decode(bytes);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(message->questions[0].name, "a\\.b.c\\\\d.mesh");
  EXPECT_TRUE(NameInZone(message->questions[0].name, "mesh"));
  EXPECT_FALSE(NameInZone(message->questions[0].name, "b.c\\\\d.mesh"));

  auto encoded = Encode(*message);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(*encoded, bytes);
}

TEST(DecodeTest, RootNameAndUnknownTypes) {
  auto bytes = HeaderBytes(1, 1, 0, 0);
  PutName(bytes, "");
  Put16(bytes, kTypeSoa);
  Put16(bytes, kClassIn);
  // A class CHAOS "A" record is not an IPv4 address: kept raw, whatever its length.
  PutName(bytes, "");
  Put16(bytes, kTypeA);
  Put16(bytes, 3);
  Put32(bytes, 0);
  Put16(bytes, 2);
  bytes.push_back(0xab);
  bytes.push_back(0xcd);
  auto message = Decode(bytes);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(message->questions[0].name, "");
  ASSERT_EQ(message->answers.size(), 1u);
  EXPECT_EQ(message->answers[0].rclass, 3);
  EXPECT_EQ(message->answers[0].data, RData(std::vector<uint8_t>{0xab, 0xcd}));
}

TEST(DecodeTest, IgnoresTrailingBytes) {
  auto bytes = WithQuestion(0, 0, 0);
  bytes.push_back(0xff);
  bytes.push_back(0x00);
  auto message = Decode(bytes);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(message->questions.size(), 1u);
}

TEST(DecodeTest, ExtendedRcodeFromOpt) {
  auto bytes = HeaderBytes(0, 0, 0, 1, /*flags=*/0x8000);
  PutName(bytes, "");
  Put16(bytes, kTypeOpt);
  Put16(bytes, 4096);
  Put32(bytes, 0x01008000);  // EXTENDED-RCODE 1, VERSION 0, DO.
  Put16(bytes, 0);
  auto message = Decode(bytes);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(message->header.rcode, Rcode::kBadVers);
  ASSERT_TRUE(message->edns.has_value());
  EXPECT_EQ(*message->edns, (Edns{4096, 0, true}));
}

// ---- Decoding: what is rejected ---------------------------------------------------------------

TEST(DecodeRejectTest, TruncatedHeader) {
  std::vector<uint8_t> bytes = {0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0};
  uint16_t id = 0;
  auto message = Decode(bytes, &id);
  ASSERT_FALSE(message.ok());
  EXPECT_THAT(message.status().message(), HasSubstr("header: cut short (11 of 12 bytes)"));
  EXPECT_EQ(id, 0xabcd);  // Enough for a FORMERR to the right query.

  id = 7;
  EXPECT_FALSE(Decode(std::vector<uint8_t>{0xab}, &id).ok());
  EXPECT_EQ(id, 7);
  EXPECT_FALSE(Decode({}).ok());
}

TEST(DecodeRejectTest, CountsLargerThanTheBytes) {
  auto bytes = HeaderBytes(0xffff, 0xffff, 0xffff, 0xffff);
  uint16_t id = 0;
  auto message = Decode(bytes, &id);
  ASSERT_FALSE(message.ok());
  EXPECT_THAT(message.status().message(), HasSubstr("65535 questions and 196605 records"));
  EXPECT_EQ(id, 0x1234);

  // One record more than the bytes hold.
  auto one_short = WithQuestion(1, 0, 0);
  EXPECT_THAT(DecodeError(one_short), HasSubstr("header: 1 questions and 1 records"));
  // Enough bytes for the minimum, but the record is cut short.
  one_short.resize(one_short.size() + 11, 0);
  one_short[one_short.size() - 1] = 9;  // RDLENGTH 9 with nothing after it.
  EXPECT_THAT(DecodeError(one_short), HasSubstr("answer 1: RDATA cut short: RDLENGTH 9"));
}

TEST(DecodeRejectTest, PointerToItself) {
  auto bytes = HeaderBytes(1, 0, 0, 0);
  Append(bytes, {0xc0, 0x0c, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(bytes),
              HasSubstr("question 1: name: compression pointer to offset 12 does not point "
                        "before 12"));
}

TEST(DecodeRejectTest, PointerLoop) {
  // "a" at 12, then a pointer back to 12: a pointer that points backwards but into the name it
  // ends, which would repeat "a" forever.
  auto bytes = HeaderBytes(1, 0, 0, 0);
  Append(bytes, {1, 'a', 0xc0, 0x0c, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(bytes), HasSubstr("question 1: name: compression pointer"));

  // Two names pointing at each other: the second points back at the first, whose pointer points
  // forward to the second.
  auto pair = HeaderBytes(2, 0, 0, 0);
  Append(pair, {1, 'a', 0xc0, 18, 0, 1, 0, 1, 1, 'b', 0xc0, 12, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(pair), HasSubstr("question 1: name: compression pointer to offset 18"));
}

TEST(DecodeRejectTest, ForwardPointer) {
  auto bytes = HeaderBytes(1, 0, 0, 0);
  Append(bytes, {0xc0, 0x20, 0, 1, 0, 1});
  bytes.resize(0x30, 0);
  EXPECT_THAT(DecodeError(bytes), HasSubstr("pointer to offset 32 does not point before 12"));
}

TEST(DecodeRejectTest, LabelLongerThan63) {
  auto bytes = HeaderBytes(1, 0, 0, 0);
  bytes.push_back(64);
  bytes.resize(bytes.size() + 64, 'x');
  Append(bytes, {0, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(bytes), HasSubstr("question 1: name: label longer than 63 bytes"));
}

TEST(DecodeRejectTest, NameLongerThan255) {
  // Labels of 63, 63, 63 and 61 bytes: 255 bytes with the root, the most there can be.
  auto longest = HeaderBytes(1, 0, 0, 0);
  for (size_t length : {63, 63, 63, 61}) {
    longest.push_back(static_cast<uint8_t>(length));
    longest.resize(longest.size() + length, 'x');
  }
  Append(longest, {0, 0, 1, 0, 1});
  auto message = Decode(longest);
  ASSERT_TRUE(message.ok()) << message.status();
  EXPECT_EQ(message->questions[0].name.size(), 253u);

  auto too_long = HeaderBytes(1, 0, 0, 0);
  for (size_t length : {63, 63, 63, 62}) {
    too_long.push_back(static_cast<uint8_t>(length));
    too_long.resize(too_long.size() + length, 'x');
  }
  Append(too_long, {0, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(too_long), HasSubstr("question 1: name: longer than 255 bytes"));

  // Too long only once a pointer is followed: 200 bytes in the first question, 100 more in
  // front of a pointer to it in the second.
  auto via_pointer = HeaderBytes(2, 0, 0, 0);
  for (size_t length : {63, 63, 63, 8}) {
    via_pointer.push_back(static_cast<uint8_t>(length));
    via_pointer.resize(via_pointer.size() + length, 'x');
  }
  Append(via_pointer, {0, 0, 1, 0, 1});
  for (size_t length : {63, 36}) {
    via_pointer.push_back(static_cast<uint8_t>(length));
    via_pointer.resize(via_pointer.size() + length, 'y');
  }
  Append(via_pointer, {0xc0, 12, 0, 1, 0, 1});
  EXPECT_THAT(DecodeError(via_pointer), HasSubstr("question 2: name: longer than 255 bytes"));
}

TEST(DecodeRejectTest, TruncatedQuestion) {
  auto bytes = WithQuestion(0, 0, 0);
  bytes.resize(bytes.size() - 1);
  EXPECT_THAT(DecodeError(bytes), HasSubstr("question 1: cut short in QTYPE or QCLASS"));
  auto in_name = HeaderBytes(1, 0, 0, 0);
  Append(in_name, {4, 'm', 'e', 's'});
  in_name.resize(in_name.size() + 1, 0);  // Room for the minimum question, not for the name.
  EXPECT_THAT(DecodeError(in_name), HasSubstr("question 1: name: cut short"));
}

TEST(DecodeRejectTest, TruncatedRdata) {
  auto bytes = WithQuestion(1, 0, 0);
  Append(bytes, {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 100, 64});
  EXPECT_THAT(DecodeError(bytes), HasSubstr("answer 1: RDATA cut short: RDLENGTH 4, 2 bytes left"));
}

TEST(DecodeRejectTest, AddressOfTheWrongLength) {
  auto bytes = WithQuestion(1, 0, 0);
  Append(bytes, {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 5, 100, 64, 0, 7, 0});
  EXPECT_THAT(DecodeError(bytes), HasSubstr("answer 1: A RDATA is 5 bytes, not 4"));

  auto aaaa = WithQuestion(0, 0, 1);
  Append(aaaa, {0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 4, 100, 64, 0, 7});
  EXPECT_THAT(DecodeError(aaaa), HasSubstr("additional 1: AAAA RDATA is 4 bytes, not 16"));
}

TEST(DecodeRejectTest, RdlengthNotFilledByName) {
  // An NS whose RDLENGTH says 4 but whose name "ns" + pointer takes 5.
  auto runs_past = WithQuestion(0, 1, 0);
  Append(runs_past, {0xc0, 16, 0, 2, 0, 1, 0, 0, 0, 5, 0, 4, 2, 'n', 's', 0xc0, 16});
  EXPECT_THAT(DecodeError(runs_past), HasSubstr("authority 1: RDATA name: cut short"));

  // A CNAME whose RDLENGTH says 4 but whose name (a pointer) takes 2.
  auto leaves_bytes = WithQuestion(1, 0, 0);
  Append(leaves_bytes, {0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 5, 0, 4, 0xc0, 12, 0, 0});
  EXPECT_THAT(DecodeError(leaves_bytes),
              HasSubstr("answer 1: RDLENGTH 4 has 2 bytes left after the name"));

  // An SOA one byte short of its five numbers.
  auto soa = WithQuestion(0, 1, 0);
  Append(soa, {0xc0, 16, 0, 6, 0, 1, 0, 0, 0, 5, 0, 23, 0xc0, 16, 0xc0, 16});
  soa.resize(soa.size() + 19, 0);
  EXPECT_THAT(DecodeError(soa), HasSubstr("authority 1: SOA RDATA cut short by RDLENGTH 23"));
}

TEST(DecodeRejectTest, OptRecords) {
  auto opt = [](std::vector<uint8_t>& out, std::string_view owner) {
    PutName(out, owner);
    Put16(out, kTypeOpt);
    Put16(out, 1232);
    Put32(out, 0);
    Put16(out, 0);
  };
  auto two = WithQuestion(0, 0, 2);
  opt(two, "");
  opt(two, "");
  EXPECT_THAT(DecodeError(two), HasSubstr("additional 2: a second OPT record"));

  auto in_answer = WithQuestion(1, 0, 0);
  opt(in_answer, "");
  EXPECT_THAT(DecodeError(in_answer),
              HasSubstr("answer 1: OPT record outside the additional section"));

  auto named = WithQuestion(0, 0, 1);
  opt(named, "mesh");
  EXPECT_THAT(DecodeError(named),
              HasSubstr("additional 1: OPT record owned by \"mesh\", not the root"));
}

TEST(DecodeRejectTest, CutShortAnywhere) {
  // Every prefix of a valid response is either rejected or (cut after a whole record... there is
  // none here: the counts promise all of them) never read out of bounds.
  Message response = Query("bob.mesh");
  response.header.qr = true;
  response.answers.push_back(MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.7")));
  response.authority.push_back(
      MakeRecord("mesh", kTypeSoa, Soa{"ns.mesh", "hostmaster.mesh", 1, 2, 3, 4, 5}));
  response.edns = Edns{};
  auto bytes = Encode(response);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  for (size_t size = 0; size < bytes->size(); ++size) {
    EXPECT_FALSE(Decode(absl::MakeConstSpan(bytes->data(), size)).ok()) << size;
  }
  EXPECT_TRUE(Decode(*bytes).ok());
}

// ---- Encoding ---------------------------------------------------------------------------------

TEST(EncodeTest, RoundTripsEveryRecordType) {
  Message message = Query("bob.mesh", kTypeAny);
  message.header.qr = true;
  message.header.aa = true;
  message.answers = {
      MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.7")),
      MakeRecord("bob.mesh", kTypeAaaa, Ip("fd7a:115c:a1e0::7")),
      MakeRecord("www.mesh", kTypeCname, std::string("bob.mesh")),
      MakeRecord("7.0.64.100.in-addr.arpa", kTypePtr, std::string("bob.mesh")),
      MakeRecord("bob.mesh", kTypeTxt, std::vector<uint8_t>{5, 'h', 'e', 'l', 'l', 'o'}),
      MakeRecord("bob.mesh", 65, std::vector<uint8_t>{0, 1, 0}),
      MakeRecord("bob.mesh", 99, std::vector<uint8_t>{}),
  };
  message.authority = {
      MakeRecord("mesh", kTypeNs, std::string("ns.mesh"), 300),
      MakeRecord("mesh", kTypeSoa, Soa{"ns.mesh", "hostmaster.mesh", 42, 3600, 600, 86400, 5}),
  };
  message.additional = {MakeRecord("ns.mesh", kTypeA, Ip("100.64.0.1"))};
  Record chaos = MakeRecord("version.bind", kTypeA, std::vector<uint8_t>{1, 2});
  chaos.rclass = 3;
  message.additional.push_back(chaos);
  ExpectRoundTrip(message);
}

TEST(EncodeTest, RoundTripsEveryHeaderBit) {
  Message message;
  message.header = Header{0xffff, true, 2, true, true, true, true, true, true, Rcode::kRefused};
  ExpectRoundTrip(message);
  message.header = Header{};
  message.header.opcode = 15;
  ExpectRoundTrip(message);
}

TEST(EncodeTest, RepeatedNamesTakeTwoBytes) {
  Message message = Query("bob.mesh");
  message.answers.push_back(MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.7")));
  message.answers.push_back(MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.8")));
  auto bytes = Encode(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // Header, the question (10 + 4), then two answers of a pointer and 14 bytes.
  EXPECT_EQ(bytes->size(), 12u + 14 + 2 * 16);
  EXPECT_EQ((*bytes)[26], 0xc0);
  EXPECT_EQ((*bytes)[27], 12);
  EXPECT_EQ((*bytes)[42], 0xc0);
  EXPECT_EQ((*bytes)[43], 12);
}

TEST(EncodeTest, CompressesSuffixesAndRdataNames) {
  Message message = Query("www.bob.mesh");
  message.answers.push_back(MakeRecord("www.bob.mesh", kTypeCname, std::string("bob.mesh")));
  message.authority.push_back(
      MakeRecord("mesh", kTypeSoa, Soa{"ns.mesh", "hostmaster.mesh", 1, 2, 3, 4, 5}));
  auto bytes = Encode(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::vector<uint8_t> want = HeaderBytes(1, 1, 1, 0, 0x0100);
  want[0] = 0xbe;
  want[1] = 0xef;
  PutName(want, "www.bob.mesh");  // 12; "bob" at 16, "mesh" at 20.
  Put16(want, kTypeA);
  Put16(want, kClassIn);
  Append(want, {0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 5, 0, 2, 0xc0, 16});
  Append(want, {0xc0, 20, 0, 6, 0, 1, 0, 0, 0, 5, 0, 38});
  Append(want, {2, 'n', 's', 0xc0, 20});
  Append(want, {10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r', 0xc0, 20});
  for (uint32_t v : {1, 2, 3, 4, 5}) Put32(want, v);
  EXPECT_EQ(*bytes, want);
  ExpectRoundTrip(message);
}

TEST(EncodeTest, CompressionKeepsCase) {
  // A resolver that randomizes the case of its question (DNS 0x20) checks that the answer spells
  // it the same way: "BoB.mesh" must not become a pointer to "bob.mesh".
  Message message = Query("bob.mesh");
  message.answers.push_back(MakeRecord("BoB.mesh", kTypeA, Ip("100.64.0.7")));
  auto bytes = Encode(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->size(), 12u + 14 + (4 + 2) + 14);  // "BoB" and a pointer to "mesh".
  ExpectRoundTrip(message);
}

TEST(EncodeTest, LongestName) {
  const std::string name = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                           std::string(63, 'c') + "." + std::string(61, 'd');
  ExpectRoundTrip(Query(name));
  EXPECT_THAT(EncodeError(Query(name + "d")), HasSubstr("longer than 255 bytes"));
  // As many one-byte labels as fit: 127 of them.
  std::string labels = "a";
  for (int i = 1; i < 127; ++i) labels += ".a";
  ExpectRoundTrip(Query(labels));
  EXPECT_THAT(EncodeError(Query(labels + ".a")), HasSubstr("longer than 255 bytes"));
}

TEST(EncodeTest, RejectsInvalidNames) {
  EXPECT_THAT(EncodeError(Query("a..b")), HasSubstr("question 1: name \"a..b\": empty label"));
  EXPECT_THAT(EncodeError(Query("bob.mesh.")), HasSubstr("empty label"));
  EXPECT_THAT(EncodeError(Query(".")), HasSubstr("empty label"));
  EXPECT_THAT(EncodeError(Query(".mesh")), HasSubstr("empty label"));
  EXPECT_THAT(EncodeError(Query(std::string(64, 'x') + ".mesh")),
              HasSubstr("label longer than 63 bytes"));
  EXPECT_THAT(EncodeError(Query("a\\b.mesh")), HasSubstr("'\\' that does not escape"));
  EXPECT_THAT(EncodeError(Query("mesh\\")), HasSubstr("'\\' that does not escape"));
  ExpectRoundTrip(Query("a\\.b\\\\.mesh"));

  Message bad_answer = Query("bob.mesh");
  bad_answer.answers.push_back(MakeRecord("bob.mesh", kTypeA, Ip("100.64.0.7")));
  bad_answer.answers.push_back(MakeRecord("x..mesh", kTypeA, Ip("100.64.0.7")));
  EXPECT_THAT(EncodeError(bad_answer), HasSubstr("answer 2: name \"x..mesh\": empty label"));
  // Also when that record would have been dropped for size.
  EXPECT_THAT(EncodeError(bad_answer, 40), HasSubstr("answer 2: name"));

  Message bad_rdata = Query("mesh");
  bad_rdata.authority.push_back(MakeRecord("mesh", kTypeNs, std::string("ns..mesh")));
  EXPECT_THAT(EncodeError(bad_rdata), HasSubstr("authority 1: RDATA name \"ns..mesh\""));
}

TEST(EncodeTest, RejectsRdataOfTheWrongKind) {
  Message message = Query("bob.mesh");
  message.answers = {MakeRecord("bob.mesh", kTypeA, Ip("fd00::1"))};
  EXPECT_THAT(EncodeError(message), HasSubstr("answer 1: RDATA is the address fd00::1"));
  message.answers = {MakeRecord("bob.mesh", kTypeTxt, Ip("100.64.0.7"))};
  EXPECT_THAT(EncodeError(message), HasSubstr("the record is TXT"));
  message.answers = {MakeRecord("bob.mesh", kTypeA, std::string("bob.mesh"))};
  EXPECT_THAT(EncodeError(message), HasSubstr("RDATA is a name, but the record is A"));
  message.answers = {MakeRecord("bob.mesh", kTypeNs, Soa{})};
  EXPECT_THAT(EncodeError(message), HasSubstr("RDATA is an SOA, but the record is NS"));
  message.answers = {MakeRecord("bob.mesh", kTypeA, std::vector<uint8_t>{1, 2, 3, 4})};
  EXPECT_THAT(EncodeError(message), HasSubstr("RDATA is raw bytes, but A"));
  message.answers = {MakeRecord("bob.mesh", kTypeTxt, std::vector<uint8_t>(65536))};
  EXPECT_THAT(EncodeError(message), HasSubstr("more than RDLENGTH can say"));
  message.answers = {};
  message.additional = {MakeRecord("", kTypeOpt, std::vector<uint8_t>{})};
  EXPECT_THAT(EncodeError(message), HasSubstr("additional 1: an OPT record"));
}

TEST(EncodeTest, EdnsRoundTrip) {
  Message message = Query("bob.mesh");
  message.edns = Edns{1232, 0, true};
  ExpectRoundTrip(message);

  // BADVERS (16) needs the OPT record's upper bits; the header keeps 0.
  Message badvers;
  badvers.header.id = 7;
  badvers.header.qr = true;
  badvers.header.rcode = Rcode::kBadVers;
  badvers.edns = Edns{4096, 0, false};
  auto bytes = Encode(badvers);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), 12u + 11);
  EXPECT_EQ((*bytes)[3] & 0xF, 0);
  EXPECT_EQ((*bytes)[12 + 5], 1);  // EXTENDED-RCODE, the first byte of TTL.
  ExpectRoundTrip(badvers);

  badvers.edns.reset();
  EXPECT_THAT(EncodeError(badvers), HasSubstr("RCODE BADVERS (16) needs EDNS"));
  badvers.header.rcode = static_cast<Rcode>(4096);
  badvers.edns = Edns{};
  EXPECT_THAT(EncodeError(badvers), HasSubstr("does not fit in 12 bits"));

  Message version;
  version.edns = Edns{512, 1, false};
  ExpectRoundTrip(version);
}

// ---- Encoding: truncation ---------------------------------------------------------------------

Message ManyAnswers(size_t count) {
  Message message = Query("bob.mesh");
  message.header.qr = true;
  for (size_t i = 0; i < count; ++i) {
    uint8_t a[4] = {100, 64, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
    message.answers.push_back(MakeRecord("bob.mesh", kTypeA, IpAddress::V4(a)));
  }
  return message;
}

TEST(TruncationTest, At512WithManyAnswersSetsTcAndKeepsOpt) {
  Message message = ManyAnswers(40);
  message.edns = Edns{512, 0, false};
  message.additional.push_back(MakeRecord("ns.mesh", kTypeA, Ip("100.64.0.1")));
  auto bytes = Encode(message, kClassicUdpSize);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // 26 bytes of header and question, 16 per answer, 11 of OPT: 29 answers fit.
  EXPECT_EQ(bytes->size(), 26u + 29 * 16 + 11);
  auto decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->header.tc);
  EXPECT_EQ(decoded->questions, message.questions);
  ASSERT_EQ(decoded->answers.size(), 29u);
  EXPECT_TRUE(
      std::equal(decoded->answers.begin(), decoded->answers.end(), message.answers.begin()));
  EXPECT_TRUE(decoded->additional.empty());
  EXPECT_EQ(decoded->edns, message.edns);

  // Without EDNS the 11 bytes go to answers: one more fits.
  message.edns.reset();
  bytes = Encode(message, kClassicUdpSize);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->size(), 26u + 30 * 16);

  // Over TCP everything fits, and TC stays clear.
  bytes = Encode(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->header.tc);
  EXPECT_EQ(*decoded, message);
}

TEST(TruncationTest, AdditionalDroppedSilently) {
  Message message = ManyAnswers(2);
  message.edns = Edns{};
  for (int i = 0; i < 40; ++i) {
    message.additional.push_back(MakeRecord("ns.mesh", kTypeA, Ip("100.64.0.1")));
  }
  auto bytes = Encode(message, kClassicUdpSize);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_LE(bytes->size(), kClassicUdpSize);
  auto decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->header.tc);
  EXPECT_EQ(decoded->answers, message.answers);
  EXPECT_GT(decoded->additional.size(), 0u);
  EXPECT_LT(decoded->additional.size(), 40u);
  EXPECT_TRUE(decoded->edns.has_value());
}

TEST(TruncationTest, AuthorityDroppedSetsTc) {
  Message message = ManyAnswers(25);
  for (int i = 0; i < 10; ++i) {
    message.authority.push_back(MakeRecord("mesh", kTypeNs, absl::StrCat("ns", i, ".mesh")));
  }
  message.additional.push_back(MakeRecord("ns0.mesh", kTypeA, Ip("100.64.0.1")));
  auto bytes = Encode(message, kClassicUdpSize);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->header.tc);
  EXPECT_EQ(decoded->answers, message.answers);
  EXPECT_LT(decoded->authority.size(), 10u);
  EXPECT_TRUE(decoded->additional.empty());
}

TEST(TruncationTest, KeepsTcTheCallerSet) {
  Message message = ManyAnswers(1);
  message.header.tc = true;
  ExpectRoundTrip(message);
}

TEST(TruncationTest, QuestionMustFit) {
  Message message = Query("bob.mesh");
  message.edns = Edns{};
  EXPECT_TRUE(Encode(message, 12 + 14 + 11).ok());
  EXPECT_THAT(EncodeError(message, 12 + 14 + 10),
              HasSubstr("the header and 1 questions and OPT take 37 bytes, more than the limit "
                        "of 36"));
}

TEST(TruncationTest, LimitNeverAbove65535) {
  Message message = ManyAnswers(5000);  // 80026 bytes in full.
  auto bytes = Encode(message, 1 << 20);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_LE(bytes->size(), kMaxMessageSize);
  auto decoded = Decode(*bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->header.tc);
  EXPECT_EQ(decoded->answers.size(), (kMaxMessageSize - 26) / 16);
}

// ---- Names ------------------------------------------------------------------------------------

TEST(NameTest, EqualsIgnoresAsciiCaseOnly) {
  EXPECT_TRUE(NameEquals("Bob.MESH", "bob.mesh"));
  EXPECT_TRUE(NameEquals("", ""));
  EXPECT_FALSE(NameEquals("bob.mesh", "bob.mesh2"));
  EXPECT_FALSE(NameEquals("bob.mesh", "bob\\.mesh"));
  // RFC 4343: bytes above 0x7F do not fold ("\xC4" and "\xE4" are Ä and ä in Latin-1).
  EXPECT_FALSE(NameEquals("\xC4.mesh", "\xE4.mesh"));
  EXPECT_FALSE(NameEquals("[", "{"));  // 0x5B and 0x7B differ by 0x20 but are not letters.
}

TEST(NameTest, InZone) {
  EXPECT_TRUE(NameInZone("a.b.mesh", "mesh"));
  EXPECT_TRUE(NameInZone("a.b.mesh", "b.mesh"));
  EXPECT_TRUE(NameInZone("A.B.Mesh", "b.MESH"));
  EXPECT_TRUE(NameInZone("mesh", "mesh"));
  EXPECT_TRUE(NameInZone("MESH", "mesh"));
  EXPECT_TRUE(NameInZone("anything.at.all", ""));
  EXPECT_TRUE(NameInZone("", ""));
  EXPECT_FALSE(NameInZone("xmesh", "mesh"));
  EXPECT_FALSE(NameInZone("mesh", "a.mesh"));
  EXPECT_FALSE(NameInZone("", "mesh"));
  EXPECT_FALSE(NameInZone(".mesh", "mesh"));
  // "a\.mesh" is one label; "a\\.mesh" is the label "a\" in mesh.
  EXPECT_FALSE(NameInZone("a\\.mesh", "mesh"));
  EXPECT_TRUE(NameInZone("a\\\\.mesh", "mesh"));
  EXPECT_FALSE(NameInZone("a\\\\\\.mesh", "mesh"));
}

TEST(NameTest, CanonicalName) {
  EXPECT_EQ(CanonicalName("Bob.MESH"), "bob.mesh");
  EXPECT_EQ(CanonicalName("\xC4-[Z]"), "\xC4-[z]");
  EXPECT_EQ(CanonicalName(""), "");
}

// ---- Reverse names ----------------------------------------------------------------------------

TEST(ReverseNameTest, Ipv4BothWays) {
  EXPECT_EQ(ReverseName(Ip("100.64.0.7")), "7.0.64.100.in-addr.arpa");
  EXPECT_EQ(ReverseName(Ip("0.0.0.0")), "0.0.0.0.in-addr.arpa");
  EXPECT_EQ(AddressOfReverseName("7.0.64.100.in-addr.arpa"), Ip("100.64.0.7"));
  EXPECT_EQ(AddressOfReverseName("255.0.10.1.IN-ADDR.Arpa"), Ip("1.10.0.255"));
  for (const char* bad :
       {"7.0.64.in-addr.arpa", "1.7.0.64.100.in-addr.arpa", "07.0.64.100.in-addr.arpa",
        "256.0.64.100.in-addr.arpa", "x.0.64.100.in-addr.arpa", ".0.64.100.in-addr.arpa",
        "7.0.64.100in-addr.arpa", "7.0.64.100.in-addr.arpa.", "in-addr.arpa",
        "7.0.64.100.in-addr.arp", "-1.0.64.100.in-addr.arpa"}) {
    EXPECT_EQ(AddressOfReverseName(bad), std::nullopt) << bad;
  }
}

TEST(ReverseNameTest, Ipv6BothWays) {
  const std::string name = ReverseName(Ip("fd7a:115c:a1e0::7"));
  EXPECT_EQ(name, "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa");
  EXPECT_EQ(AddressOfReverseName(name), Ip("fd7a:115c:a1e0::7"));
  // Either case: "fd" and "FD" are the same nibbles.
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(AddressOfReverseName(upper), Ip("fd7a:115c:a1e0::7"));
  EXPECT_EQ(AddressOfReverseName(
                "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"),
            std::nullopt);  // 31 nibbles.
  EXPECT_EQ(AddressOfReverseName(
                "10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"),
            std::nullopt);
  EXPECT_EQ(AddressOfReverseName(
                "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"),
            std::nullopt);
  for (const char* text : {"::", "::1", "2001:db8::ffff:1", "ffff:ffff:ffff:ffff::"}) {
    EXPECT_EQ(AddressOfReverseName(ReverseName(Ip(text))), Ip(text)) << text;
  }
}

// ---- Text forms -------------------------------------------------------------------------------

TEST(TextTest, RcodeAndTypeNames) {
  EXPECT_STREQ(RcodeName(Rcode::kNoError), "NOERROR");
  EXPECT_STREQ(RcodeName(Rcode::kFormErr), "FORMERR");
  EXPECT_STREQ(RcodeName(Rcode::kServFail), "SERVFAIL");
  EXPECT_STREQ(RcodeName(Rcode::kNxDomain), "NXDOMAIN");
  EXPECT_STREQ(RcodeName(Rcode::kNotImp), "NOTIMP");
  EXPECT_STREQ(RcodeName(Rcode::kRefused), "REFUSED");
  EXPECT_STREQ(RcodeName(Rcode::kBadVers), "BADVERS");
  EXPECT_STREQ(RcodeName(static_cast<Rcode>(12)), "RCODE12");
  EXPECT_STREQ(RcodeName(static_cast<Rcode>(4095)), "RCODE4095");

  EXPECT_STREQ(TypeName(kTypeA), "A");
  EXPECT_STREQ(TypeName(kTypeAaaa), "AAAA");
  EXPECT_STREQ(TypeName(kTypeNs), "NS");
  EXPECT_STREQ(TypeName(kTypeSoa), "SOA");
  EXPECT_STREQ(TypeName(kTypePtr), "PTR");
  EXPECT_STREQ(TypeName(kTypeCname), "CNAME");
  EXPECT_STREQ(TypeName(kTypeTxt), "TXT");
  EXPECT_STREQ(TypeName(kTypeOpt), "OPT");
  EXPECT_STREQ(TypeName(kTypeAny), "ANY");
  EXPECT_STREQ(TypeName(65), "TYPE65");
  EXPECT_STREQ(TypeName(0), "TYPE0");
  EXPECT_STREQ(TypeName(65535), "TYPE65535");
  // The pointer stays valid: a second lookup does not overwrite the first.
  const char* first = TypeName(65);
  TypeName(66);
  EXPECT_STREQ(first, "TYPE65");
}

}  // namespace
}  // namespace tunnelmesh::dns
