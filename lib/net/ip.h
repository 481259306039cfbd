// IP addresses, prefixes and UDP endpoints (IPv4 and IPv6), with parsing from the text forms used
// in WireGuard configs ("10.0.0.1", "fd00::1", "10.0.0.0/24", "[fd00::1]:51820", "host:port").
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tunnelmesh {

// An IPv4 or IPv6 address. IPv4 addresses are stored in the first 4 bytes. Trivially copyable.
class IpAddress {
 public:
  enum class Family : uint8_t { kV4, kV6 };

  IpAddress() = default;  // 0.0.0.0
  static IpAddress V4(const uint8_t bytes[4]);
  static IpAddress V6(const uint8_t bytes[16]);
  static IpAddress V4(uint32_t host_order);
  // Parses dotted-quad or RFC 5952 text. No brackets, no zone.
  [[nodiscard]] static absl::StatusOr<IpAddress> Parse(std::string_view text);

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::kV4; }
  bool is_v6() const { return family_ == Family::kV6; }
  int bit_length() const { return is_v4() ? 32 : 128; }
  int byte_length() const { return is_v4() ? 4 : 16; }
  const uint8_t* bytes() const { return bytes_.data(); }
  // Bit `i` counted from the most significant bit of the first byte.
  bool bit(int i) const { return (bytes_[i / 8] >> (7 - i % 8)) & 1; }
  std::string ToString() const;

  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.family_ == b.family_ && a.bytes_ == b.bytes_;
  }
  friend bool operator<(const IpAddress& a, const IpAddress& b) {
    if (a.family_ != b.family_) return a.family_ < b.family_;
    return a.bytes_ < b.bytes_;
  }

 private:
  Family family_ = Family::kV4;
  std::array<uint8_t, 16> bytes_{};
};

// An address with a prefix length; the host bits are zeroed on construction ("10.0.0.7/24" is
// 10.0.0.0/24), as WireGuard does for AllowedIPs.
class Prefix {
 public:
  Prefix() = default;
  // Zeroes the host bits. A length outside 0..address.bit_length() is clamped into that range;
  // Parse() rejects such text instead.
  Prefix(const IpAddress& address, int length);
  // "10.0.0.0/24", "fd00::/64"; a bare address means a host prefix (/32 or /128).
  [[nodiscard]] static absl::StatusOr<Prefix> Parse(std::string_view text);

  const IpAddress& address() const { return address_; }
  int length() const { return length_; }
  bool Contains(const IpAddress& ip) const;
  std::string ToString() const;

  friend bool operator==(const Prefix& a, const Prefix& b) {
    return a.length_ == b.length_ && a.address_ == b.address_;
  }
  // Orders by family, then address, then length (shorter first), so sorted prefixes read naturally.
  friend bool operator<(const Prefix& a, const Prefix& b) {
    if (!(a.address_ == b.address_)) return a.address_ < b.address_;
    return a.length_ < b.length_;
  }

 private:
  IpAddress address_;
  int length_ = 0;
};

// The block that limits per source count `address` in: an IPv4 address alone, an IPv6 address by
// its /64 (a single site or subscriber is usually given a whole /64, so counting IPv6 addresses one
// by one would let one host make up as many sources as it likes). IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) count as the IPv4 address.
Prefix SourceBlock(const IpAddress& address);

// A UDP endpoint: address and port. Converts to and from sockaddr for the socket layer.
class Endpoint {
 public:
  Endpoint() = default;
  Endpoint(const IpAddress& address, uint16_t port) : address_(address), port_(port) {}
  // "1.2.3.4:51820" or "[fd00::1]:51820". Host names are not resolved here.
  [[nodiscard]] static absl::StatusOr<Endpoint> Parse(std::string_view text);
  // Reads an AF_INET or AF_INET6 sockaddr; IPv4-mapped IPv6 addresses become IPv4.
  [[nodiscard]] static absl::StatusOr<Endpoint> FromSockaddr(const sockaddr* sa, socklen_t len);
  // Writes a sockaddr_in6 (IPv4 as mapped) into `out`; returns its length.
  socklen_t ToSockaddrV6(sockaddr_in6* out) const;

  const IpAddress& address() const { return address_; }
  uint16_t port() const { return port_; }
  bool valid() const { return port_ != 0; }
  std::string ToString() const;

  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.port_ == b.port_ && a.address_ == b.address_;
  }

 private:
  IpAddress address_;
  uint16_t port_ = 0;
};

}  // namespace tunnelmesh
