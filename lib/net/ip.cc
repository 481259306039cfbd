#include "lib/net/ip.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tunnelmesh {
namespace {

// Upper bound on the text form of an address; anything longer cannot be one and is rejected before
// it is copied. INET6_ADDRSTRLEN already counts the terminating NUL.
constexpr size_t kMaxAddressText = INET6_ADDRSTRLEN;

// Debian's abseil keeps its own string_view type, which does not convert from std::string_view.
absl::string_view AsAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// The bad input as it appears inside an error message: quoted, with control and non-ASCII bytes
// escaped so that the message stays one printable line.
std::string Quote(std::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(AsAbsl(text)), "\"");
}

// Parses a decimal number of 1 to `max_digits` ASCII digits; no sign, no spaces.
bool ParseDecimal(std::string_view text, size_t max_digits, uint32_t* out) {
  if (text.empty() || text.size() > max_digits) return false;
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  *out = value;
  return true;
}

// The IPv4-mapped IPv6 prefix ::ffff:0:0/96 (RFC 4291 section 2.5.5.2).
constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

// ---- IpAddress --------------------------------------------------------------------------------

IpAddress IpAddress::V4(const uint8_t bytes[4]) {
  IpAddress ip;
  ip.family_ = Family::kV4;
  std::memcpy(ip.bytes_.data(), bytes, 4);
  return ip;
}

IpAddress IpAddress::V6(const uint8_t bytes[16]) {
  IpAddress ip;
  ip.family_ = Family::kV6;
  std::memcpy(ip.bytes_.data(), bytes, 16);
  return ip;
}

IpAddress IpAddress::V4(uint32_t host_order) {
  const uint8_t bytes[4] = {
      static_cast<uint8_t>(host_order >> 24), static_cast<uint8_t>(host_order >> 16),
      static_cast<uint8_t>(host_order >> 8), static_cast<uint8_t>(host_order)};
  return V4(bytes);
}

absl::StatusOr<IpAddress> IpAddress::Parse(std::string_view text) {
  // inet_pton needs a NUL-terminated string; an embedded NUL would silently cut the text short.
  if (!text.empty() && text.size() < kMaxAddressText && text.find('\0') == std::string_view::npos) {
    const std::string terminated(text);
    uint8_t bytes[16];
    if (text.find(':') == std::string_view::npos) {
      if (inet_pton(AF_INET, terminated.c_str(), bytes) == 1) return V4(bytes);
    } else if (inet_pton(AF_INET6, terminated.c_str(), bytes) == 1) {
      return V6(bytes);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Quote(text),
                   " is not an IP address: expected IPv4 like 10.0.0.1 or IPv6 like "
                   "fd00::1 (no brackets, no zone)"));
}

std::string IpAddress::ToString() const {
  char buffer[INET6_ADDRSTRLEN];
  const int af = is_v4() ? AF_INET : AF_INET6;
  if (inet_ntop(af, bytes_.data(), buffer, sizeof(buffer)) == nullptr) return "<invalid>";
  return buffer;
}

// ---- Prefix -----------------------------------------------------------------------------------

Prefix::Prefix(const IpAddress& address, int length) {
  // The constructor cannot fail, so an out-of-range length is clamped; Parse() rejects it instead.
  length_ = std::clamp(length, 0, address.bit_length());
  uint8_t bytes[16] = {};
  std::memcpy(bytes, address.bytes(), address.byte_length());
  const int full_bytes = length_ / 8;
  const int rest_bits = length_ % 8;
  if (full_bytes < address.byte_length()) {
    bytes[full_bytes] &= static_cast<uint8_t>(0xff00 >> rest_bits);
    std::memset(bytes + full_bytes + 1, 0, address.byte_length() - full_bytes - 1);
  }
  address_ = address.is_v4() ? IpAddress::V4(bytes) : IpAddress::V6(bytes);
}

absl::StatusOr<Prefix> Prefix::Parse(std::string_view text) {
  auto syntax_error = [text] {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(text),
                     " is not an IP prefix: expected ADDRESS/LENGTH like 10.0.0.0/24 "
                     "or fd00::/64"));
  };
  const size_t slash = text.find('/');
  auto address = IpAddress::Parse(text.substr(0, slash));
  if (!address.ok()) return syntax_error();
  if (slash == std::string_view::npos) return Prefix(*address, address->bit_length());

  uint32_t length = 0;
  if (!ParseDecimal(text.substr(slash + 1), 3, &length)) return syntax_error();
  if (length > static_cast<uint32_t>(address->bit_length())) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(text), " is not an IP prefix: length ", length, " is out of range 0-",
                     address->bit_length(), " for ", address->is_v4() ? "IPv4" : "IPv6"));
  }
  return Prefix(*address, static_cast<int>(length));
}

bool Prefix::Contains(const IpAddress& ip) const {
  if (ip.family() != address_.family()) return false;
  const int full_bytes = length_ / 8;
  const int rest_bits = length_ % 8;
  if (std::memcmp(ip.bytes(), address_.bytes(), full_bytes) != 0) return false;
  if (rest_bits == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff00 >> rest_bits);
  return ((ip.bytes()[full_bytes] ^ address_.bytes()[full_bytes]) & mask) == 0;
}

std::string Prefix::ToString() const { return absl::StrCat(address_.ToString(), "/", length_); }

// ---- Endpoint ---------------------------------------------------------------------------------

absl::StatusOr<Endpoint> Endpoint::Parse(std::string_view text) {
  auto syntax_error = [text](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(text), " is not a UDP endpoint: ", AsAbsl(why),
                     "; expected ADDRESS:PORT like 192.0.2.1:51820 or [fd00::1]:51820"));
  };

  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return syntax_error("missing ']'");
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return syntax_error("missing port");
    port_text = rest.substr(1);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return syntax_error("missing port");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return syntax_error("an IPv6 address needs brackets");
    }
    port_text = text.substr(colon + 1);
  }

  auto address = IpAddress::Parse(host);
  if (!address.ok()) return syntax_error("host is not an IP address (names are not resolved here)");
  uint32_t port = 0;
  if (port_text.empty()) return syntax_error("missing port");
  if (!ParseDecimal(port_text, 5, &port) || port == 0 || port > 65535) {
    return syntax_error("port must be a number from 1 to 65535");
  }
  return Endpoint(*address, static_cast<uint16_t>(port));
}

absl::StatusOr<Endpoint> Endpoint::FromSockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr ||
      len < static_cast<socklen_t>(offsetof(sockaddr, sa_family) + sizeof(sa_family_t))) {
    return absl::InvalidArgumentError("socket address is missing or too short to hold a family");
  }
  // Copy out rather than cast: the caller's buffer need not be aligned for sockaddr_in6.
  sa_family_t family;
  std::memcpy(&family, reinterpret_cast<const uint8_t*>(sa) + offsetof(sockaddr, sa_family),
              sizeof(family));
  if (family == AF_INET) {
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) {
      return absl::InvalidArgumentError(absl::StrCat("AF_INET socket address is ", len,
                                                     " bytes, expected ", sizeof(sockaddr_in)));
    }
    sockaddr_in sin;
    std::memcpy(&sin, sa, sizeof(sin));
    uint8_t bytes[4];
    std::memcpy(bytes, &sin.sin_addr, 4);
    return Endpoint(IpAddress::V4(bytes), ntohs(sin.sin_port));
  }
  if (family == AF_INET6) {
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) {
      return absl::InvalidArgumentError(absl::StrCat("AF_INET6 socket address is ", len,
                                                     " bytes, expected ", sizeof(sockaddr_in6)));
    }
    sockaddr_in6 sin6;
    std::memcpy(&sin6, sa, sizeof(sin6));
    uint8_t bytes[16];
    std::memcpy(bytes, &sin6.sin6_addr, 16);
    const uint16_t port = ntohs(sin6.sin6_port);
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; keep them IPv4 so that the same
    // peer has one Endpoint whichever socket saw it.
    if (std::memcmp(bytes, kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
      return Endpoint(IpAddress::V4(bytes + 12), port);
    }
    return Endpoint(IpAddress::V6(bytes), port);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("socket address family ", family, " is neither AF_INET nor AF_INET6"));
}

socklen_t Endpoint::ToSockaddrV6(sockaddr_in6* out) const {
  std::memset(out, 0, sizeof(*out));
  out->sin6_family = AF_INET6;
  out->sin6_port = htons(port_);
  uint8_t bytes[16] = {};
  if (address_.is_v4()) {
    std::memcpy(bytes, kV4MappedPrefix, sizeof(kV4MappedPrefix));
    std::memcpy(bytes + 12, address_.bytes(), 4);
  } else {
    std::memcpy(bytes, address_.bytes(), 16);
  }
  std::memcpy(&out->sin6_addr, bytes, 16);
  return static_cast<socklen_t>(sizeof(*out));
}

std::string Endpoint::ToString() const {
  if (address_.is_v4()) return absl::StrCat(address_.ToString(), ":", port_);
  return absl::StrCat("[", address_.ToString(), "]:", port_);
}

Prefix SourceBlock(const IpAddress& address) {
  if (address.is_v4()) return Prefix(address, 32);
  if (std::memcmp(address.bytes(), kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
    return Prefix(IpAddress::V4(address.bytes() + 12), 32);
  }
  return Prefix(address, 64);
}

}  // namespace tunnelmesh
