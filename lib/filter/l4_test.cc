// ParseTransport: TCP, UDP and ICMP fields, IPv6 extension headers, fragments, ICMP errors and
// their quoted headers, and every way a header can be cut short.
#include "lib/filter/l4.h"

#include "gtest/gtest.h"
#include "lib/filter/testing/packets.h"

namespace tunnelmesh::filter {
namespace {

using testing::Bytes;
using testing::Ip;

TEST(L4Test, TcpAndUdpBothFamilies) {
  for (const char* pair : {"10.0.0.1 10.0.0.2", "fd00::1 fd00::2"}) {
    const std::string text(pair);
    const IpAddress s = Ip(text.substr(0, text.find(' ')));
    const IpAddress d = Ip(text.substr(text.find(' ') + 1));
    Transport t;
    ASSERT_TRUE(ParseTransport(testing::Tcp(s, d, 4000, 22, kTcpSyn), &t));
    EXPECT_EQ(t.protocol, Protocol::kTcp);
    EXPECT_EQ(t.tuple.source, s);
    EXPECT_EQ(t.tuple.destination, d);
    EXPECT_EQ(t.tuple.source_port, 4000);
    EXPECT_EQ(t.tuple.destination_port, 22);
    EXPECT_EQ(t.tcp_flags, kTcpSyn);
    const FlowKey key = FlowKeyOf(t);
    EXPECT_EQ(key.destination_port, 22);
    EXPECT_EQ(key.protocol, Protocol::kTcp);

    ASSERT_TRUE(ParseTransport(testing::Udp(s, d, 5353, 53), &t));
    EXPECT_EQ(t.protocol, Protocol::kUdp);
    EXPECT_EQ(t.tuple.source_port, 5353);
    EXPECT_EQ(t.tuple.destination_port, 53);
  }
}

TEST(L4Test, TruncatedTransportHeadersAreMalformed) {
  const IpAddress s = Ip("10.0.0.1"), d = Ip("10.0.0.2");
  const Bytes tcp = testing::TcpHeader(1, 2, kTcpAck);
  for (size_t n = 0; n < tcp.size(); ++n) {
    Transport t;
    EXPECT_FALSE(ParseTransport(
        testing::IpPacket(s, d, kIpProtoTcp, Bytes(tcp.begin(), tcp.begin() + n)), &t))
        << n;
  }
  Bytes bad_offset = tcp;
  bad_offset[12] = 0x40;  // Data offset 4 words: below the minimum.
  Transport t;
  EXPECT_FALSE(ParseTransport(testing::IpPacket(s, d, kIpProtoTcp, bad_offset), &t));
  bad_offset[12] = 0x60;  // 6 words, but only 5 present.
  EXPECT_FALSE(ParseTransport(testing::IpPacket(s, d, kIpProtoTcp, bad_offset), &t));
  const Bytes udp = testing::UdpHeader(1, 2);
  for (size_t n = 0; n < udp.size(); ++n) {
    EXPECT_FALSE(ParseTransport(
        testing::IpPacket(s, d, kIpProtoUdp, Bytes(udp.begin(), udp.begin() + n)), &t));
  }
  const Bytes icmp = testing::IcmpHeader(8, 0, 7);
  for (size_t n = 0; n < icmp.size(); ++n) {
    EXPECT_FALSE(ParseTransport(
        testing::IpPacket(s, d, kIpProtoIcmp, Bytes(icmp.begin(), icmp.begin() + n)), &t));
  }
  // A whole packet cut anywhere is malformed too (the IP length no longer fits).
  const Bytes whole = testing::Tcp(s, d, 1, 2, kTcpSyn);
  for (size_t n = 0; n < whole.size(); ++n) {
    EXPECT_FALSE(ParseTransport(Bytes(whole.begin(), whole.begin() + n), &t)) << n;
  }
}

TEST(L4Test, PaddingPastTheIpLengthIsIgnored) {
  Bytes p = testing::Udp(Ip("10.0.0.1"), Ip("10.0.0.2"), 1, 2);
  p.insert(p.end(), 30, 0xff);
  Transport t;
  ASSERT_TRUE(ParseTransport(p, &t));
  EXPECT_EQ(t.tuple.destination_port, 2);
  // The transport header must lie inside the IP length, not in the padding.
  Bytes cut = testing::IpPacket(Ip("10.0.0.1"), Ip("10.0.0.2"), kIpProtoUdp, Bytes{0, 1, 0, 2});
  cut.insert(cut.end(), 8, 0);
  EXPECT_FALSE(ParseTransport(cut, &t));
}

TEST(L4Test, IcmpEchoIdentifiers) {
  Transport t;
  ASSERT_TRUE(ParseTransport(testing::EchoRequest(Ip("10.0.0.1"), Ip("10.0.0.2"), 77), &t));
  EXPECT_EQ(t.protocol, Protocol::kIcmp);
  EXPECT_EQ(t.icmp, IcmpKind::kEchoRequest);
  EXPECT_EQ(t.tuple.source_port, 77);
  EXPECT_EQ(t.tuple.destination_port, 0);
  ASSERT_TRUE(ParseTransport(testing::EchoReply(Ip("fd00::2"), Ip("fd00::1"), 77), &t));
  EXPECT_EQ(t.icmp, IcmpKind::kEchoReply);
  EXPECT_EQ(t.tuple.ip_protocol, kIpProtoIcmpv6);
  EXPECT_EQ(t.tuple.source_port, 0);
  EXPECT_EQ(t.tuple.destination_port, 77);
  // ICMPv4's protocol number inside IPv6 is just another protocol.
  ASSERT_TRUE(ParseTransport(
      testing::IpPacket(Ip("fd00::2"), Ip("fd00::1"), kIpProtoIcmp, testing::IcmpHeader(8, 0, 1)),
      &t));
  EXPECT_EQ(t.protocol, Protocol::kAny);
  EXPECT_EQ(t.icmp, IcmpKind::kNone);
}

// Extension header with Next Header `next` and `length` 8-byte units after the first 8.
Bytes Extension(uint8_t next, uint8_t length) {
  Bytes b = {next, length};
  b.insert(b.end(), 6 + size_t{length} * 8, 0);
  return b;
}

Bytes Fragment(uint8_t next, uint16_t offset, bool more) {
  Bytes b = {next, 0};
  testing::PutBe16(b, static_cast<uint16_t>(offset << 3 | (more ? 1 : 0)));
  b.insert(b.end(), {0, 0, 0, 42});
  return b;
}

TEST(L4Test, Ipv6ExtensionHeadersAreWalked) {
  const IpAddress s = Ip("fd00::1"), d = Ip("fd00::2");
  Bytes ext = Extension(43, 0);                     // Hop-by-hop -> routing.
  const Bytes routing = Extension(44, 2);           // Routing (24 bytes) -> fragment.
  const Bytes fragment = Fragment(60, 0, true);     // First fragment -> destination options.
  const Bytes options = Extension(kIpProtoTcp, 1);  // Destination options -> TCP.
  ext.insert(ext.end(), routing.begin(), routing.end());
  ext.insert(ext.end(), fragment.begin(), fragment.end());
  ext.insert(ext.end(), options.begin(), options.end());
  Transport t;
  ASSERT_TRUE(ParseTransport(
      testing::IpPacket(s, d, 0, testing::TcpHeader(1234, 443, kTcpSyn), 0, ext), &t));
  EXPECT_EQ(t.protocol, Protocol::kTcp);
  EXPECT_FALSE(t.later_fragment);
  EXPECT_EQ(t.tuple.ip_protocol, kIpProtoTcp);
  EXPECT_EQ(t.tuple.destination_port, 443);

  // Cut inside the chain.
  for (size_t n = 1; n < ext.size(); n += 3) {
    EXPECT_FALSE(
        ParseTransport(testing::IpPacket(s, d, 0, {}, 0, Bytes(ext.begin(), ext.begin() + n)), &t))
        << n;
  }
  // Nine headers are too many; eight are fine.
  Bytes eight, nine;
  for (int i = 0; i < 8; ++i) {
    const Bytes e = Extension(i == 7 ? kIpProtoUdp : 60, 0);
    eight.insert(eight.end(), e.begin(), e.end());
  }
  EXPECT_TRUE(ParseTransport(testing::IpPacket(s, d, 60, testing::UdpHeader(1, 2), 0, eight), &t));
  for (int i = 0; i < 9; ++i) {
    const Bytes e = Extension(i == 8 ? kIpProtoUdp : 60, 0);
    nine.insert(nine.end(), e.begin(), e.end());
  }
  EXPECT_FALSE(ParseTransport(testing::IpPacket(s, d, 60, testing::UdpHeader(1, 2), 0, nine), &t));
}

TEST(L4Test, LaterFragmentsHaveNoPorts) {
  Transport t;
  // IPv6: offset 185 (1480 bytes), payload is the middle of a UDP datagram.
  const Bytes v6 = testing::IpPacket(Ip("fd00::1"), Ip("fd00::2"), 44, Bytes{1, 2, 3}, 0,
                                     Fragment(kIpProtoUdp, 185, false));
  ASSERT_TRUE(ParseTransport(v6, &t));
  EXPECT_TRUE(t.later_fragment);
  EXPECT_EQ(t.protocol, Protocol::kUdp);
  EXPECT_EQ(t.tuple.destination_port, 0);
  // IPv4: offset 185 words, no transport header needed.
  const Bytes v4 =
      testing::IpPacket(Ip("10.0.0.1"), Ip("10.0.0.2"), kIpProtoTcp, Bytes{1, 2, 3}, 185);
  ASSERT_TRUE(ParseTransport(v4, &t));
  EXPECT_TRUE(t.later_fragment);
  EXPECT_EQ(t.protocol, Protocol::kTcp);
  // IPv4 offset 1 could rewrite the first fragment's TCP flags (RFC 1858).
  EXPECT_FALSE(ParseTransport(
      testing::IpPacket(Ip("10.0.0.1"), Ip("10.0.0.2"), kIpProtoTcp, Bytes(20, 0), 1), &t));
  // A first fragment (More Fragments set, offset 0) too short for the TCP header is malformed.
  EXPECT_FALSE(ParseTransport(
      testing::IpPacket(Ip("10.0.0.1"), Ip("10.0.0.2"), kIpProtoTcp, Bytes(8, 0), 0x2000), &t));
}

TEST(L4Test, IcmpErrorsQuoteTheirPacket) {
  const IpAddress a4 = Ip("10.0.0.1"), b4 = Ip("10.0.0.2");
  const Bytes sent = testing::Udp(a4, b4, 5000, 9999);
  Transport t;
  ASSERT_TRUE(ParseTransport(testing::Unreachable(b4, a4, sent), &t));
  EXPECT_EQ(t.icmp, IcmpKind::kError);
  EXPECT_EQ(t.quoted.source, a4);
  EXPECT_EQ(t.quoted.destination, b4);
  EXPECT_EQ(t.quoted.ip_protocol, kIpProtoUdp);
  EXPECT_EQ(t.quoted.source_port, 5000);
  EXPECT_EQ(t.quoted.destination_port, 9999);

  // IPv6, quoting a TCP segment behind a destination options header.
  const IpAddress a6 = Ip("fd00::1"), b6 = Ip("fd00::2");
  const Bytes tcp6 =
      testing::IpPacket(a6, b6, 60, testing::TcpHeader(4000, 80, kTcpSyn), 0, Extension(6, 0));
  ASSERT_TRUE(ParseTransport(
      testing::IpPacket(b6, a6, kIpProtoIcmpv6, testing::IcmpHeader(2, 0, 0, tcp6)),  // Too big.
      &t));
  EXPECT_EQ(t.icmp, IcmpKind::kError);
  EXPECT_EQ(t.quoted.source_port, 4000);
  EXPECT_EQ(t.quoted.destination_port, 80);

  // Quoting an echo request: its identifier is the quoted source port.
  ASSERT_TRUE(ParseTransport(testing::Unreachable(b4, a4, testing::EchoRequest(a4, b4, 9)), &t));
  EXPECT_EQ(t.quoted.source_port, 9);

  // Quote cut inside its ports, of the other family, or itself an error.
  const Bytes short_quote(sent.begin(), sent.begin() + 22);
  EXPECT_FALSE(ParseTransport(
      testing::IpPacket(b4, a4, kIpProtoIcmp, testing::IcmpHeader(3, 3, 0, short_quote)), &t));
  EXPECT_FALSE(ParseTransport(
      testing::IpPacket(b4, a4, kIpProtoIcmp, testing::IcmpHeader(3, 3, 0, tcp6)), &t));
  EXPECT_FALSE(
      ParseTransport(testing::Unreachable(b4, a4, testing::Unreachable(a4, b4, sent)), &t));
  // An error without any quote.
  EXPECT_FALSE(
      ParseTransport(testing::IpPacket(b4, a4, kIpProtoIcmp, testing::IcmpHeader(11, 0, 0)), &t));
}

}  // namespace
}  // namespace tunnelmesh::filter
