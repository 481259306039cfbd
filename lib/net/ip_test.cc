#include "lib/net/ip.h"

#include <arpa/inet.h>

#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using ::testing::HasSubstr;

IpAddress Ip(std::string_view text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.ok()) << ip.status();
  return ip.ok() ? *ip : IpAddress();
}

Prefix Pfx(std::string_view text) {
  auto prefix = Prefix::Parse(text);
  EXPECT_TRUE(prefix.ok()) << prefix.status();
  return prefix.ok() ? *prefix : Prefix();
}

// ---- IpAddress --------------------------------------------------------------------------------

TEST(IpAddressTest, DefaultIsV4Zero) {
  IpAddress ip;
  EXPECT_TRUE(ip.is_v4());
  EXPECT_EQ(ip.ToString(), "0.0.0.0");
}

TEST(IpAddressTest, ParsesV4) {
  IpAddress ip = Ip("10.1.2.3");
  EXPECT_TRUE(ip.is_v4());
  EXPECT_EQ(ip.family(), IpAddress::Family::kV4);
  EXPECT_EQ(ip.bit_length(), 32);
  EXPECT_EQ(ip.byte_length(), 4);
  EXPECT_EQ(ip.bytes()[0], 10);
  EXPECT_EQ(ip.bytes()[3], 3);
  EXPECT_EQ(ip.ToString(), "10.1.2.3");
  EXPECT_EQ(ip, IpAddress::V4(0x0a010203u));
}

TEST(IpAddressTest, ParsesV6AndPrintsCanonicalForm) {
  IpAddress ip = Ip("FD00:0:0:0:0:0:0:1");
  EXPECT_TRUE(ip.is_v6());
  EXPECT_EQ(ip.bit_length(), 128);
  EXPECT_EQ(ip.byte_length(), 16);
  EXPECT_EQ(ip.bytes()[0], 0xfd);
  EXPECT_EQ(ip.bytes()[15], 1);
  EXPECT_EQ(ip.ToString(), "fd00::1");
  EXPECT_EQ(Ip("::").ToString(), "::");
  EXPECT_EQ(Ip("2001:db8:0:1:1:1:1:1").ToString(), "2001:db8:0:1:1:1:1:1");
}

TEST(IpAddressTest, MappedV6StaysV6WhenParsed) {
  IpAddress ip = Ip("::ffff:1.2.3.4");
  EXPECT_TRUE(ip.is_v6());
  EXPECT_NE(ip, Ip("1.2.3.4"));
}

TEST(IpAddressTest, RejectsBadText) {
  for (std::string_view bad :
       {"", "10.0.0.300", "10.0.0", "10.0.0.1.2", "010.0.0.1", " 10.0.0.1", "10.0.0.1 ",
        "[fd00::1]", "fd00::1%eth0", "fd00:::1", "host.example", "10.0.0.1/32"}) {
    auto ip = IpAddress::Parse(bad);
    EXPECT_FALSE(ip.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(ip.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(IpAddressTest, RejectsEmbeddedNul) {
  EXPECT_FALSE(IpAddress::Parse(std::string_view("10.0.0.1\0x", 10)).ok());
  EXPECT_FALSE(IpAddress::Parse(std::string_view("10.0.0.1\0", 9)).ok());
}

TEST(IpAddressTest, RejectsOverlongTextWithoutCopyingIt) {
  const std::string huge(100000, '1');
  EXPECT_FALSE(IpAddress::Parse(huge).ok());
}

TEST(IpAddressTest, ErrorNamesTextAndExpectation) {
  auto ip = IpAddress::Parse("10.0.0.300");
  ASSERT_FALSE(ip.ok());
  EXPECT_THAT(ip.status().message(), HasSubstr("\"10.0.0.300\" is not an IP address"));
  EXPECT_THAT(ip.status().message(), HasSubstr("10.0.0.1"));
}

TEST(IpAddressTest, ErrorEscapesControlCharacters) {
  auto ip = IpAddress::Parse("bad\n\x01");
  ASSERT_FALSE(ip.ok());
  EXPECT_THAT(ip.status().message(), HasSubstr("\"bad\\n\\x01\""));
}

TEST(IpAddressTest, BitsCountFromMostSignificant) {
  IpAddress ip = Ip("128.0.0.1");
  EXPECT_TRUE(ip.bit(0));
  EXPECT_FALSE(ip.bit(1));
  EXPECT_TRUE(ip.bit(31));
  EXPECT_FALSE(ip.bit(30));
}

TEST(IpAddressTest, OrdersByFamilyThenBytes) {
  EXPECT_LT(Ip("10.0.0.1"), Ip("10.0.0.2"));
  EXPECT_LT(Ip("255.255.255.255"), Ip("::"));
  EXPECT_FALSE(Ip("10.0.0.1") < Ip("10.0.0.1"));
}

TEST(IpAddressTest, FactoriesFromBytes) {
  const uint8_t v4[4] = {192, 0, 2, 1};
  EXPECT_EQ(IpAddress::V4(v4).ToString(), "192.0.2.1");
  uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
  v6[15] = 9;
  EXPECT_EQ(IpAddress::V6(v6).ToString(), "2001:db8::9");
}

// ---- Prefix -----------------------------------------------------------------------------------

TEST(PrefixTest, ParsesAndZeroesHostBits) {
  Prefix p = Pfx("10.0.0.7/24");
  EXPECT_EQ(p.length(), 24);
  EXPECT_EQ(p.address(), Ip("10.0.0.0"));
  EXPECT_EQ(p.ToString(), "10.0.0.0/24");
  EXPECT_EQ(Pfx("10.255.255.255/9").ToString(), "10.128.0.0/9");
  EXPECT_EQ(Pfx("fd00:1234:5678::1/20").ToString(), "fd00:1000::/20");
  EXPECT_EQ(Pfx("1.2.3.4/0").ToString(), "0.0.0.0/0");
  EXPECT_EQ(Pfx("fd00::1/0").ToString(), "::/0");
  EXPECT_EQ(Pfx("1.2.3.4/32").ToString(), "1.2.3.4/32");
  EXPECT_EQ(Pfx("fd00::1/128").ToString(), "fd00::1/128");
}

TEST(PrefixTest, BareAddressIsHostPrefix) {
  EXPECT_EQ(Pfx("10.0.0.1"), Prefix(Ip("10.0.0.1"), 32));
  EXPECT_EQ(Pfx("fd00::1"), Prefix(Ip("fd00::1"), 128));
}

TEST(PrefixTest, RejectsBadText) {
  for (std::string_view bad :
       {"", "/24", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/8 ",
        "10.0.0.0/8/8", "10.0.0.0/0x8", "10.0.0.0/0008", "10.0.0.300/24", "fd00::/abc"}) {
    auto p = Prefix::Parse(bad);
    EXPECT_FALSE(p.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(PrefixTest, RejectsLengthOutOfRange) {
  auto v4 = Prefix::Parse("10.0.0.0/33");
  ASSERT_FALSE(v4.ok());
  EXPECT_EQ(v4.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v4.status().message(), HasSubstr("\"10.0.0.0/33\""));
  EXPECT_THAT(v4.status().message(), HasSubstr("0-32"));
  auto v6 = Prefix::Parse("fd00::/129");
  ASSERT_FALSE(v6.ok());
  EXPECT_THAT(v6.status().message(), HasSubstr("0-128"));
  EXPECT_FALSE(Prefix::Parse("fd00::/999").ok());
}

TEST(PrefixTest, ErrorMatchesDocumentedForm) {
  auto p = Prefix::Parse("10.0.0.300/24");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(),
              HasSubstr("\"10.0.0.300/24\" is not an IP prefix: expected ADDRESS/LENGTH like "
                        "10.0.0.0/24"));
}

TEST(PrefixTest, ConstructorClampsLength) {
  EXPECT_EQ(Prefix(Ip("10.1.2.3"), 40).length(), 32);
  EXPECT_EQ(Prefix(Ip("10.1.2.3"), -3).length(), 0);
  EXPECT_EQ(Prefix(Ip("fd00::1"), 200).length(), 128);
}

TEST(PrefixTest, Contains) {
  Prefix p = Pfx("10.1.0.0/16");
  EXPECT_TRUE(p.Contains(Ip("10.1.0.0")));
  EXPECT_TRUE(p.Contains(Ip("10.1.255.255")));
  EXPECT_FALSE(p.Contains(Ip("10.2.0.0")));
  EXPECT_FALSE(p.Contains(Ip("::ffff:10.1.0.1")));

  Prefix odd = Pfx("192.168.0.0/23");
  EXPECT_TRUE(odd.Contains(Ip("192.168.1.200")));
  EXPECT_FALSE(odd.Contains(Ip("192.168.2.0")));

  EXPECT_TRUE(Pfx("0.0.0.0/0").Contains(Ip("255.1.2.3")));
  EXPECT_FALSE(Pfx("0.0.0.0/0").Contains(Ip("::1")));
  EXPECT_TRUE(Pfx("::/0").Contains(Ip("::1")));
  EXPECT_TRUE(Pfx("fd00::/7").Contains(Ip("fdff::1")));
  EXPECT_TRUE(Pfx("fc00::/7").Contains(Ip("fdff::1")));
  EXPECT_FALSE(Pfx("fc00::/8").Contains(Ip("fdff::1")));
  EXPECT_TRUE(Pfx("fd00::1/128").Contains(Ip("fd00::1")));
  EXPECT_FALSE(Pfx("fd00::1/128").Contains(Ip("fd00::2")));
}

TEST(PrefixTest, Ordering) {
  EXPECT_LT(Pfx("10.0.0.0/8"), Pfx("10.0.0.0/16"));
  EXPECT_LT(Pfx("10.0.0.0/16"), Pfx("10.1.0.0/16"));
  EXPECT_LT(Pfx("10.0.0.0/16"), Pfx("::/0"));
}

// ---- Endpoint ---------------------------------------------------------------------------------

TEST(EndpointTest, ParsesV4AndV6) {
  auto v4 = Endpoint::Parse("1.2.3.4:51820");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->address(), Ip("1.2.3.4"));
  EXPECT_EQ(v4->port(), 51820);
  EXPECT_TRUE(v4->valid());
  EXPECT_EQ(v4->ToString(), "1.2.3.4:51820");

  auto v6 = Endpoint::Parse("[fd00::1]:51820");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->address(), Ip("fd00::1"));
  EXPECT_EQ(v6->port(), 51820);
  EXPECT_EQ(v6->ToString(), "[fd00::1]:51820");

  auto edge = Endpoint::Parse("[::]:65535");
  ASSERT_TRUE(edge.ok()) << edge.status();
  EXPECT_EQ(edge->port(), 65535);
  auto one = Endpoint::Parse("0.0.0.0:1");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->port(), 1);
}

TEST(EndpointTest, DefaultIsInvalid) { EXPECT_FALSE(Endpoint().valid()); }

TEST(EndpointTest, RejectsBadText) {
  for (std::string_view bad : {"",
                               "1.2.3.4",
                               "1.2.3.4:",
                               "1.2.3.4:0",
                               "1.2.3.4:65536",
                               "1.2.3.4:99999999",
                               "1.2.3.4:-1",
                               "1.2.3.4:+80",
                               "1.2.3.4: 80",
                               "1.2.3.4:80x",
                               "fd00::1:51820",
                               "[fd00::1]",
                               "[fd00::1]:",
                               "[fd00::1]51820",
                               "[fd00::1:51820",
                               "[fd00::1%eth0]:51820",
                               "[]:51820",
                               "example.com:51820",
                               ":51820",
                               "1.2.3.4:5:6"}) {
    auto ep = Endpoint::Parse(bad);
    EXPECT_FALSE(ep.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(EndpointTest, ErrorsSayWhatIsWrong) {
  EXPECT_THAT(Endpoint::Parse("1.2.3.4").status().message(), HasSubstr("missing port"));
  EXPECT_THAT(Endpoint::Parse("1.2.3.4:0").status().message(), HasSubstr("1 to 65535"));
  EXPECT_THAT(Endpoint::Parse("fd00::1:51820").status().message(), HasSubstr("brackets"));
  EXPECT_THAT(Endpoint::Parse("example.com:1").status().message(),
              HasSubstr("\"example.com:1\" is not a UDP endpoint"));
}

TEST(EndpointTest, FromSockaddrV4) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(51820);
  ASSERT_EQ(inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr), 1);
  auto ep = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->ToString(), "192.0.2.7:51820");
}

TEST(EndpointTest, FromSockaddrV6) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(443);
  ASSERT_EQ(inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr), 1);
  auto ep = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_TRUE(ep->address().is_v6());
  EXPECT_EQ(ep->ToString(), "[2001:db8::5]:443");
}

TEST(EndpointTest, FromSockaddrUnwrapsMappedV4) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(51820);
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:198.51.100.9", &sin6.sin6_addr), 1);
  auto ep = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_TRUE(ep->address().is_v4());
  EXPECT_EQ(*ep, Endpoint(Ip("198.51.100.9"), 51820));
}

TEST(EndpointTest, FromSockaddrReadsUnalignedStorage) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(7);
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::7", &sin6.sin6_addr), 1);
  alignas(8) uint8_t storage[sizeof(sin6) + 1];
  std::memcpy(storage + 1, &sin6, sizeof(sin6));
  auto ep = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(storage + 1), sizeof(sin6));
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->ToString(), "[fd00::7]:7");
}

TEST(EndpointTest, FromSockaddrRejectsShortOrUnknown) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  EXPECT_FALSE(Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin), 8).ok());
  EXPECT_FALSE(Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin), 1).ok());
  EXPECT_FALSE(Endpoint::FromSockaddr(nullptr, sizeof(sin)).ok());

  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  EXPECT_FALSE(
      Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sockaddr_in)).ok());

  sockaddr_storage other{};
  other.ss_family = AF_UNIX;
  auto ep = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&other), sizeof(other));
  ASSERT_FALSE(ep.ok());
  EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EndpointTest, ToSockaddrV6MapsV4) {
  Endpoint ep(Ip("203.0.113.5"), 51820);
  sockaddr_in6 out;
  std::memset(&out, 0xaa, sizeof(out));
  ASSERT_EQ(ep.ToSockaddrV6(&out), sizeof(sockaddr_in6));
  EXPECT_EQ(out.sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(out.sin6_port), 51820);
  EXPECT_EQ(out.sin6_flowinfo, 0u);
  EXPECT_EQ(out.sin6_scope_id, 0u);
  char text[INET6_ADDRSTRLEN];
  ASSERT_NE(inet_ntop(AF_INET6, &out.sin6_addr, text, sizeof(text)), nullptr);
  EXPECT_STREQ(text, "::ffff:203.0.113.5");
}

TEST(EndpointTest, SockaddrRoundTrip) {
  for (std::string_view text : {"203.0.113.5:1", "[2001:db8::1]:65535", "[::1]:51820"}) {
    auto ep = Endpoint::Parse(text);
    ASSERT_TRUE(ep.ok()) << ep.status();
    sockaddr_in6 out;
    const socklen_t len = ep->ToSockaddrV6(&out);
    auto back = Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&out), len);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, *ep) << text;
    EXPECT_EQ(back->ToString(), text);
  }
}

}  // namespace
TEST(SourceBlockTest, CountsIpv4AloneAndIpv6ByItsSlash64) {
  EXPECT_EQ(SourceBlock(*IpAddress::Parse("198.51.100.7")).ToString(), "198.51.100.7/32");
  EXPECT_EQ(SourceBlock(*IpAddress::Parse("2001:db8:1:2:aaaa::1")).ToString(), "2001:db8:1:2::/64");
  // Two hosts of one /64 are one source; the next /64 is another.
  EXPECT_EQ(SourceBlock(*IpAddress::Parse("2001:db8:1:2::1")),
            SourceBlock(*IpAddress::Parse("2001:db8:1:2:ffff::9")));
  EXPECT_FALSE(SourceBlock(*IpAddress::Parse("2001:db8:1:2::1")) ==
               SourceBlock(*IpAddress::Parse("2001:db8:1:3::1")));
  EXPECT_EQ(SourceBlock(*IpAddress::Parse("::ffff:192.0.2.1")).ToString(), "192.0.2.1/32");
}

}  // namespace tunnelmesh
