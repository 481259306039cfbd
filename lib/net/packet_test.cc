#include "lib/net/packet.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

IpAddress Ip(std::string_view text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.ok()) << ip.status();
  return ip.ok() ? *ip : IpAddress();
}

// An IPv4 packet with a `header_words`*4-byte header, `payload` bytes of payload and a Total Length
// field that says so (tests overwrite fields afterwards to make it lie).
std::vector<uint8_t> Ipv4Packet(std::string_view src, std::string_view dst, size_t payload,
                                uint8_t header_words = 5, uint8_t protocol = 17) {
  const size_t total = header_words * 4 + payload;
  std::vector<uint8_t> p(total, 0);
  p[0] = static_cast<uint8_t>(0x40 | header_words);
  p[2] = static_cast<uint8_t>(total >> 8);
  p[3] = static_cast<uint8_t>(total);
  p[8] = 64;
  p[9] = protocol;
  std::memcpy(&p[12], Ip(src).bytes(), 4);
  std::memcpy(&p[16], Ip(dst).bytes(), 4);
  return p;
}

std::vector<uint8_t> Ipv6Packet(std::string_view src, std::string_view dst, size_t payload,
                                uint8_t next_header = 58) {
  std::vector<uint8_t> p(40 + payload, 0);
  p[0] = 0x60;
  p[4] = static_cast<uint8_t>(payload >> 8);
  p[5] = static_cast<uint8_t>(payload);
  p[6] = next_header;
  p[7] = 64;
  std::memcpy(&p[8], Ip(src).bytes(), 16);
  std::memcpy(&p[24], Ip(dst).bytes(), 16);
  return p;
}

TEST(ParseIpHeaderTest, Ipv4) {
  const auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 8, 5, 6);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(p, &info));
  EXPECT_EQ(info.version, 4);
  EXPECT_EQ(info.protocol, 6);
  EXPECT_EQ(info.source, Ip("10.0.0.1"));
  EXPECT_EQ(info.destination, Ip("10.0.0.2"));
  EXPECT_EQ(info.total_length, 28u);
}

TEST(ParseIpHeaderTest, Ipv4WithOptions) {
  const auto p = Ipv4Packet("192.0.2.1", "198.51.100.1", 4, 15);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(p, &info));
  EXPECT_EQ(info.total_length, 64u);
  EXPECT_EQ(info.destination, Ip("198.51.100.1"));
}

TEST(ParseIpHeaderTest, Ipv4HeaderOnly) {
  const auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 0);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(p, &info));
  EXPECT_EQ(info.total_length, 20u);
}

TEST(ParseIpHeaderTest, Ipv6) {
  const auto p = Ipv6Packet("fd00::1", "fd00::2", 12, 17);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(p, &info));
  EXPECT_EQ(info.version, 6);
  EXPECT_EQ(info.protocol, 17);
  EXPECT_EQ(info.source, Ip("fd00::1"));
  EXPECT_EQ(info.destination, Ip("fd00::2"));
  EXPECT_EQ(info.total_length, 52u);
}

TEST(ParseIpHeaderTest, Ipv6ZeroPayloadIsFixedHeaderOnly) {
  auto p = Ipv6Packet("fd00::1", "fd00::2", 0);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(p, &info));
  EXPECT_EQ(info.total_length, 40u);
}

TEST(ParseIpHeaderTest, TrailingPaddingIsReportedThroughTotalLength) {
  auto v4 = Ipv4Packet("10.0.0.1", "10.0.0.2", 8);
  v4.resize(v4.size() + 10, 0xee);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(v4, &info));
  EXPECT_EQ(info.total_length, 28u);

  auto v6 = Ipv6Packet("fd00::1", "fd00::2", 8);
  v6.resize(v6.size() + 3, 0xee);
  ASSERT_TRUE(ParseIpHeader(v6, &info));
  EXPECT_EQ(info.total_length, 48u);
}

TEST(ParseIpHeaderTest, RejectsEmptyAndUnknownVersions) {
  IpHeaderInfo info;
  EXPECT_FALSE(ParseIpHeader({}, &info));
  for (uint8_t version : {0, 1, 5, 7, 15}) {
    auto p = Ipv6Packet("fd00::1", "fd00::2", 20);
    p[0] = static_cast<uint8_t>(version << 4 | 5);
    EXPECT_FALSE(ParseIpHeader(p, &info)) << "version " << int{version};
  }
}

TEST(ParseIpHeaderTest, RejectsEveryTruncationOfIpv4Header) {
  const auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 0);
  IpHeaderInfo info;
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(ParseIpHeader(absl::MakeConstSpan(p.data(), n), &info)) << n;
  }
}

TEST(ParseIpHeaderTest, RejectsEveryTruncationOfIpv6Header) {
  const auto p = Ipv6Packet("fd00::1", "fd00::2", 0);
  IpHeaderInfo info;
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(ParseIpHeader(absl::MakeConstSpan(p.data(), n), &info)) << n;
  }
}

TEST(ParseIpHeaderTest, RejectsTruncatedPayload) {
  const auto v4 = Ipv4Packet("10.0.0.1", "10.0.0.2", 100);
  const auto v6 = Ipv6Packet("fd00::1", "fd00::2", 100);
  IpHeaderInfo info;
  EXPECT_FALSE(ParseIpHeader(absl::MakeConstSpan(v4.data(), v4.size() - 1), &info));
  EXPECT_FALSE(ParseIpHeader(absl::MakeConstSpan(v6.data(), v6.size() - 1), &info));
}

TEST(ParseIpHeaderTest, RejectsIpv4IhlBelowFive) {
  IpHeaderInfo info;
  for (uint8_t ihl = 0; ihl < 5; ++ihl) {
    auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 20);
    p[0] = static_cast<uint8_t>(0x40 | ihl);
    EXPECT_FALSE(ParseIpHeader(p, &info)) << "IHL " << int{ihl};
  }
}

TEST(ParseIpHeaderTest, RejectsIpv4HeaderLongerThanBuffer) {
  auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 0);
  p[0] = 0x46;  // 24-byte header in a 20-byte buffer.
  IpHeaderInfo info;
  EXPECT_FALSE(ParseIpHeader(p, &info));
}

TEST(ParseIpHeaderTest, RejectsIpv4TotalLengthShorterThanHeader) {
  auto p = Ipv4Packet("10.0.0.1", "10.0.0.2", 20, 6);
  p[2] = 0;
  p[3] = 20;  // Header alone is 24 bytes.
  IpHeaderInfo info;
  EXPECT_FALSE(ParseIpHeader(p, &info));
  p[3] = 0;
  EXPECT_FALSE(ParseIpHeader(p, &info));
}

TEST(ParseIpHeaderTest, RejectsDeclaredLengthLargerThanBuffer) {
  auto v4 = Ipv4Packet("10.0.0.1", "10.0.0.2", 8);
  v4[3] = static_cast<uint8_t>(v4[3] + 1);
  IpHeaderInfo info;
  EXPECT_FALSE(ParseIpHeader(v4, &info));
  v4[2] = 0xff;
  v4[3] = 0xff;
  EXPECT_FALSE(ParseIpHeader(v4, &info));

  auto v6 = Ipv6Packet("fd00::1", "fd00::2", 8);
  v6[5] = 9;
  EXPECT_FALSE(ParseIpHeader(v6, &info));
  v6[4] = 0xff;
  v6[5] = 0xff;
  EXPECT_FALSE(ParseIpHeader(v6, &info));
}

TEST(ParseIpHeaderTest, MaximumLengths) {
  auto v4 = Ipv4Packet("10.0.0.1", "10.0.0.2", 65535 - 20);
  IpHeaderInfo info;
  ASSERT_TRUE(ParseIpHeader(v4, &info));
  EXPECT_EQ(info.total_length, 65535u);
  auto v6 = Ipv6Packet("fd00::1", "fd00::2", 65535);
  ASSERT_TRUE(ParseIpHeader(v6, &info));
  EXPECT_EQ(info.total_length, 65535u + 40);
}

TEST(DestinationOfTest, MatchesParseIpHeader) {
  EXPECT_EQ(DestinationOf(Ipv4Packet("10.0.0.1", "10.9.8.7", 4)), Ip("10.9.8.7"));
  EXPECT_EQ(DestinationOf(Ipv6Packet("fd00::1", "2001:db8::99", 4)), Ip("2001:db8::99"));
  EXPECT_EQ(SourceOf(Ipv4Packet("10.0.0.1", "10.9.8.7", 4)), Ip("10.0.0.1"));
  EXPECT_EQ(SourceOf(Ipv6Packet("fd00::1", "2001:db8::99", 4)), Ip("fd00::1"));

  auto bad = Ipv4Packet("10.0.0.1", "10.9.8.7", 4);
  bad[0] = 0x44;
  EXPECT_EQ(DestinationOf(bad), std::nullopt);
  EXPECT_EQ(SourceOf(bad), std::nullopt);
  EXPECT_EQ(DestinationOf({}), std::nullopt);
}

}  // namespace
}  // namespace tunnelmesh
