// The agent's configuration, read from a WireGuard INI file in the format `wg-quick` uses
// (`[Interface]` and `[Peer]` sections), so an existing wg0.conf works unchanged. Parsing is pure:
// it does no I/O except through the injectable host-name resolver, and it returns warnings instead
// of logging them. Errors are kInvalidArgument and read "wg0.conf:7: PublicKey: <what is wrong>".
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

// MTU default as wg-quick picks it for an IPv4+IPv6 path of 1500 bytes: 1500 - 80 bytes of
// IPv6 + UDP + WireGuard overhead.
inline constexpr int kDefaultMtu = 1420;
// RFC 8200 section 5: every IPv6 link has an MTU of at least 1280.
inline constexpr int kMinMtu = 1280;
inline constexpr int kMaxMtu = 65535;
// The kernel's main routing table (RT_TABLE_MAIN), which `Table = main` names.
inline constexpr uint32_t kMainRoutingTable = 254;

// An address assigned to the interface together with the prefix length of its subnet, e.g.
// 10.0.0.1/24. Unlike Prefix, the host bits are kept: they are the interface's own address.
struct InterfaceAddress {
  IpAddress address;
  int prefix_length = 0;

  // "10.0.0.1/24", "fd00::1/64"; a bare address means /32 or /128, as `ip address add` does.
  static absl::StatusOr<InterfaceAddress> Parse(std::string_view text);
  // The connected subnet, host bits zeroed: 10.0.0.0/24 for 10.0.0.1/24.
  Prefix subnet() const { return Prefix(address, prefix_length); }
  std::string ToString() const;

  friend bool operator==(const InterfaceAddress& a, const InterfaceAddress& b) {
    return a.prefix_length == b.prefix_length && a.address == b.address;
  }
};

// One `[Peer]` section.
struct PeerConfig {
  PublicKey public_key;
  // Absent when the config has no PresharedKey or an all-zero one (WireGuard's "no PSK").
  std::optional<SecretKey> preshared_key;
  // The resolved Endpoint; absent for peers that only ever connect to us.
  std::optional<Endpoint> endpoint;
  // Endpoint as written ("vpn.example.com:51820"), kept so a host name can be re-resolved later.
  std::string endpoint_text;
  // Host bits zeroed, duplicates within the peer removed, in file order.
  std::vector<Prefix> allowed_ips;
  // Seconds between keepalives; 0 means off.
  uint16_t persistent_keepalive = 0;
  // Line of the `[Peer]` header, for messages that refer back to the file.
  int line = 0;
};

// Where the routes for the peers' AllowedIPs go, as wg-quick's `Table =` says.
enum class TableMode {
  kAuto,  // `auto` or absent: the main table.
  kOff,   // `off`: no routes at all (the administrator routes).
  kId,    // A number (or `main`): routes go into that routing table.
};

// One parsed configuration file. Move-only (it holds secrets).
struct AgentConfig {
  SecretKey private_key;
  // 0 means "let the OS pick", as in WireGuard when ListenPort is absent.
  uint16_t listen_port = 0;
  std::vector<InterfaceAddress> addresses;
  int mtu = kDefaultMtu;
  TableMode table_mode = TableMode::kAuto;
  uint32_t table_id = 0;  // With TableMode::kId: the routing table (1-4294967295).
  std::vector<PeerConfig> peers;
  // Human-readable notes about accepted-but-ignored keys (wg-quick hooks, DNS, ...), each starting
  // with "file:line:". ParseAgentConfig does not log them; LoadAgentConfig does.
  std::vector<std::string> warnings;
};

// Resolves a host name from an Endpoint to one address. Returns kInvalidArgument when the name
// does not exist and kUnavailable when a retry may help (no network yet, DNS server down).
using HostResolver = std::function<absl::StatusOr<IpAddress>(const std::string& host)>;

// The real resolver: getaddrinfo(3), first IPv4 or IPv6 answer, as `wg` does. Blocks.
absl::StatusOr<IpAddress> ResolveHostName(const std::string& host);

// Parses the text of a config file. `file_name` only appears in error messages. Host names in
// Endpoint go through `resolve_host`; IP literals never do. Errors are kInvalidArgument (or the
// resolver's code) and name the file, line, key and what is expected. Thread-compatible.
[[nodiscard]] absl::StatusOr<AgentConfig> ParseAgentConfig(
    std::string_view text, std::string_view file_name,
    const HostResolver& resolve_host = ResolveHostName);

// Reads and parses the file at `path`, logging the parse warnings plus one if the file is readable
// by other users (it holds the private key). Missing file: kNotFound; unreadable:
// kPermissionDenied.
[[nodiscard]] absl::StatusOr<AgentConfig> LoadAgentConfig(
    const std::string& path, const HostResolver& resolve_host = ResolveHostName);

}  // namespace tunnelmesh
