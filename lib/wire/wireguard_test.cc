#include "lib/wire/wireguard.h"

#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::wire {
namespace {

TEST(WireTest, InitiationRoundTripsWithLittleEndianIndex) {
  HandshakeInitiation m;
  m.sender_index = 0x04030201;
  m.unencrypted_ephemeral.fill(0xaa);
  m.encrypted_static.fill(0xbb);
  m.encrypted_timestamp.fill(0xcc);
  m.mac1.fill(0xdd);
  m.mac2.fill(0xee);
  uint8_t buf[kInitiationSize];
  Serialize(m, buf);
  EXPECT_EQ(buf[0], 1);
  EXPECT_EQ(buf[4], 1);
  EXPECT_EQ(buf[7], 4);
  EXPECT_EQ(buf[8], 0xaa);
  EXPECT_EQ(buf[116], 0xdd);  // mac1 starts 32 bytes before the end.
  EXPECT_EQ(buf[132], 0xee);
  EXPECT_EQ(Classify(Bytes(buf, sizeof(buf))), MessageType::kHandshakeInitiation);
  HandshakeInitiation parsed;
  ASSERT_TRUE(Parse(Bytes(buf, sizeof(buf)), &parsed));
  EXPECT_EQ(parsed.sender_index, m.sender_index);
  EXPECT_EQ(parsed.encrypted_timestamp, m.encrypted_timestamp);
  EXPECT_EQ(parsed.mac2, m.mac2);
}

TEST(WireTest, ResponseAndCookieRoundTrip) {
  HandshakeResponse r;
  r.sender_index = 7;
  r.receiver_index = 9;
  r.encrypted_nothing.fill(3);
  uint8_t buf[kResponseSize];
  Serialize(r, buf);
  HandshakeResponse pr;
  ASSERT_TRUE(Parse(Bytes(buf, sizeof(buf)), &pr));
  EXPECT_EQ(pr.receiver_index, 9u);
  EXPECT_EQ(pr.encrypted_nothing, r.encrypted_nothing);

  CookieReply c;
  c.receiver_index = 5;
  c.nonce.fill(1);
  c.encrypted_cookie.fill(2);
  uint8_t cbuf[kCookieReplySize];
  Serialize(c, cbuf);
  CookieReply pc;
  ASSERT_TRUE(Parse(Bytes(cbuf, sizeof(cbuf)), &pc));
  EXPECT_EQ(pc.nonce, c.nonce);
  EXPECT_EQ(pc.encrypted_cookie, c.encrypted_cookie);
}

TEST(WireTest, TransportHeader) {
  uint8_t buf[kTransportMinSize] = {};
  SerializeTransportHeader({.receiver_index = 0x11223344, .counter = 0x0102030405060708}, buf);
  EXPECT_EQ(buf[8], 0x08);
  EXPECT_EQ(buf[15], 0x01);
  TransportHeader h;
  ASSERT_TRUE(ParseTransportHeader(Bytes(buf, sizeof(buf)), &h));
  EXPECT_EQ(h.receiver_index, 0x11223344u);
  EXPECT_EQ(h.counter, 0x0102030405060708u);
  EXPECT_FALSE(ParseTransportHeader(Bytes(buf, kTransportMinSize - 1), &h));
}

TEST(WireTest, RejectsWrongSizesTypesAndReservedBytes) {
  std::vector<uint8_t> buf(kInitiationSize, 0);
  buf[0] = 1;
  HandshakeInitiation m;
  EXPECT_TRUE(Parse(buf, &m));
  EXPECT_FALSE(Parse(Bytes(buf.data(), buf.size() - 1), &m));
  buf.push_back(0);
  EXPECT_FALSE(Parse(buf, &m));
  EXPECT_FALSE(Classify(buf).has_value());
  buf.pop_back();
  buf[2] = 1;  // Reserved byte set.
  EXPECT_FALSE(Parse(buf, &m));
  EXPECT_FALSE(Classify(buf).has_value());
  buf[2] = 0;
  buf[0] = 2;  // A response type at an initiation's size.
  EXPECT_FALSE(Classify(buf).has_value());
  buf[0] = 9;
  EXPECT_FALSE(Classify(buf).has_value());
  EXPECT_FALSE(Classify(Bytes()).has_value());
  uint8_t tiny[3] = {4, 0, 0};
  EXPECT_FALSE(Classify(Bytes(tiny, 3)).has_value());
}

TEST(WireTest, PaddingStaysWithinMtu) {
  EXPECT_EQ(PaddedLength(0, 1420), 0u);
  EXPECT_EQ(PaddedLength(1, 1420), 16u);
  EXPECT_EQ(PaddedLength(16, 1420), 16u);
  EXPECT_EQ(PaddedLength(1419, 1420), 1420u);
  EXPECT_EQ(PaddedLength(1420, 1420), 1420u);
  EXPECT_EQ(PaddedLength(1415, 1418), 1418u);
}

}  // namespace
}  // namespace tunnelmesh::wire
