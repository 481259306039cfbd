// Respond: bytes in, bytes out: answers within the transport's size (TC when cut, none over TCP),
// REFUSED or forwarding outside the zone, FORMERR for what does not decode, silence for responses.
#include "lib/dns/responder.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::dns {
namespace {

// A zone whose "big" name has 100 addresses: about 1,600 bytes of answers.
Zone BigZone() {
  ZoneConfig c;
  c.ranges = {Prefix::Parse("100.64.0.0/10").value()};
  ZoneMember big{"big", {}, {}};
  for (int i = 1; i <= 100; ++i) {
    big.addresses.push_back(IpAddress::V4(uint32_t{0x64400000} + static_cast<uint32_t>(i)));
  }
  return Zone(c, {big, {"bob", {}, {IpAddress::Parse("100.64.1.1").value()}}});
}

std::vector<uint8_t> QueryBytes(const std::string& name, uint16_t type,
                                std::optional<uint16_t> edns_size) {
  Message q;
  q.header.id = 7;
  q.header.rd = true;
  q.questions.push_back({name, type, kClassIn});
  if (edns_size.has_value()) q.edns = Edns{*edns_size, 0, false};
  return Encode(q).value();
}

Message Decoded(const Reply& r) {
  absl::StatusOr<Message> m = Decode(r.bytes);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : Message{};
}

TEST(ResponderTest, AnswersFitTheTransport) {
  const Zone zone = BigZone();
  // UDP without EDNS0: 512 bytes, TC set, whole records only.
  Reply r = Respond(&zone, QueryBytes("big.mesh", kTypeA, std::nullopt), Transport::kUdp, false);
  EXPECT_EQ(r.outcome, Outcome::kAnswered);
  EXPECT_TRUE(r.truncated);
  EXPECT_LE(r.bytes.size(), kClassicUdpSize);
  Message m = Decoded(r);
  EXPECT_TRUE(m.header.tc);
  EXPECT_LT(m.answers.size(), 100u);
  // EDNS0 asking for 4096: this server offers 1232.
  r = Respond(&zone, QueryBytes("big.mesh", kTypeA, 4096), Transport::kUdp, false);
  EXPECT_TRUE(r.truncated);
  EXPECT_GT(r.bytes.size(), kClassicUdpSize);
  EXPECT_LE(r.bytes.size(), kMaxUdpPayload);
  ASSERT_TRUE(Decoded(r).edns.has_value());
  // A size below 512 counts as 512.
  r = Respond(&zone, QueryBytes("big.mesh", kTypeA, 100), Transport::kUdp, false);
  EXPECT_LE(r.bytes.size(), kClassicUdpSize);
  EXPECT_GT(r.bytes.size(), 400u);
  // The TCP retry gets everything.
  r = Respond(&zone, QueryBytes("big.mesh", kTypeA, std::nullopt), Transport::kTcp, false);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(Decoded(r).answers.size(), 100u);
  // A small answer is never cut.
  r = Respond(&zone, QueryBytes("bob.mesh", kTypeA, std::nullopt), Transport::kUdp, false);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(Decoded(r).answers.size(), 1u);
}

TEST(ResponderTest, OutsideTheZoneIsRefusedOrForwarded) {
  const Zone zone = BigZone();
  const std::vector<uint8_t> q = QueryBytes("example.com", kTypeA, 1232);
  Reply r = Respond(&zone, q, Transport::kUdp, false);
  EXPECT_EQ(r.outcome, Outcome::kRefused);
  Message m = Decoded(r);
  EXPECT_EQ(m.header.rcode, Rcode::kRefused);
  EXPECT_EQ(m.header.id, 7);
  ASSERT_EQ(m.questions.size(), 1u);
  EXPECT_EQ(m.questions[0].name, "example.com");
  r = Respond(&zone, q, Transport::kUdp, true);
  EXPECT_EQ(r.outcome, Outcome::kForward);
  EXPECT_EQ(r.bytes, q);
  // Without a zone yet, the mesh's own names are outside it too.
  r = Respond(nullptr, QueryBytes("bob.mesh", kTypeA, std::nullopt), Transport::kUdp, false);
  EXPECT_EQ(r.outcome, Outcome::kRefused);
}

TEST(ResponderTest, MalformedQueriesGetFormerrAndResponsesNothing) {
  const Zone zone = BigZone();
  std::vector<uint8_t> q = QueryBytes("bob.mesh", kTypeA, std::nullopt);
  std::vector<uint8_t> cut(q.begin(), q.end() - 3);  // The question is cut short.
  Reply r = Respond(&zone, cut, Transport::kUdp, true);
  EXPECT_EQ(r.outcome, Outcome::kFormErr);
  Message m = Decoded(r);
  EXPECT_EQ(m.header.rcode, Rcode::kFormErr);
  EXPECT_EQ(m.header.id, 7);
  EXPECT_TRUE(m.header.rd);
  // A response is never answered; nor is less than a header.
  std::vector<uint8_t> response = q;
  response[2] |= 0x80;
  EXPECT_EQ(Respond(&zone, response, Transport::kUdp, true).outcome, Outcome::kDropped);
  EXPECT_TRUE(Respond(&zone, std::vector<uint8_t>(11, 0), Transport::kUdp, true).bytes.empty());
}

}  // namespace
}  // namespace tunnelmesh::dns
