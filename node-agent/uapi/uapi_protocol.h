// WireGuard's cross-platform userspace configuration protocol (wireguard.com/xplatform), the one
// `wg show` and `wg set` speak to wireguard-go over /var/run/wireguard/IFACE.sock, as a sans-IO
// core: a framer that cuts the byte stream into requests (bounded line length and line count), a
// parser that turns a request into typed operations, and formatters for the replies. No sockets
// and no agent state here: node-agent/uapi/uapi_server.h does the I/O and the agent
// (node-agent/agent/agent_uapi.cc) reads and changes its state.
//
// Requests are "get=1" or "set=1" followed by key=value lines and end with an empty line. A reply
// ends with "errno=N" and an empty line; `wg` reads N as a negated errno value (0 for success),
// so a refusal is "errno=-1" (EPERM) and `wg` prints "Operation not permitted".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh::uapi {

// Bounds on what a client may send: the longest legitimate line is a key (11 + 64 characters)
// or an IPv6 endpoint; the line count allows a few thousand peers' allowed IPs in one `set`.
inline constexpr size_t kMaxLineLength = 256;
inline constexpr size_t kMaxLinesPerRequest = 8192;

// Cuts a connection's bytes into requests. Thread-compatible; one per connection.
class RequestFramer {
 public:
  // Appends bytes received from the client.
  void Feed(std::string_view bytes);
  // The next complete request's lines (without the terminating empty line), nullopt when more
  // bytes are needed, or kResourceExhausted when a line or a request exceeds the bounds (the
  // framer is then unusable: answer and close the connection).
  [[nodiscard]] absl::StatusOr<std::optional<std::vector<std::string>>> Next();

 private:
  std::string pending_;  // Bytes after the last complete line (bounded by kMaxLineLength).
  std::vector<std::string> lines_;
  bool failed_ = false;
};

// One peer's changes in a `set` (wg set IFACE peer KEY ...; wg setconf; wg-quick).
struct PeerChange {
  PublicKey public_key;
  bool remove = false;
  bool update_only = false;                // Change the peer only if it exists.
  std::optional<SecretKey> preshared_key;  // Given: the new key (all zero: none).
  std::optional<Endpoint> endpoint;
  std::optional<uint16_t> persistent_keepalive;  // Seconds; 0 is off.
  bool replace_allowed_ips = false;              // Drop the old allowed IPs first.
  std::vector<Prefix> allowed_ips;               // Added to the peer (host bits zeroed).
};

struct SetRequest {
  std::optional<SecretKey> private_key;
  std::optional<uint16_t> listen_port;
  std::optional<uint32_t> fwmark;
  bool replace_peers = false;  // Remove every peer not named in `peers`.
  std::vector<PeerChange> peers;
};

struct Request {
  enum class Kind { kGet, kSet };
  Kind kind = Kind::kGet;
  SetRequest set;  // With kSet.
};

// Parses one request's lines. Errors are kInvalidArgument and name the line and the key.
[[nodiscard]] absl::StatusOr<Request> ParseRequest(const std::vector<std::string>& lines);

// What `get` reports.
struct PeerState {
  PublicKey public_key;
  SecretKey preshared_key;  // Zero for none.
  std::optional<Endpoint> endpoint;
  int64_t last_handshake_unix_nanos = 0;  // 0: never.
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint16_t persistent_keepalive = 0;
  std::vector<Prefix> allowed_ips;
};

struct DeviceState {
  SecretKey private_key;
  uint16_t listen_port = 0;
  std::vector<PeerState> peers;
};

// The reply to `get`: the device's keys, then each peer, then "errno=0" and the empty line. It
// holds the private and preshared keys, as the protocol requires: the caller wipes it once sent.
std::string FormatGetReply(const DeviceState& state);
// "errno=-N\n\n" for errno value N (0: success).
std::string FormatErrnoReply(int errno_value);
// The errno value a failed request is answered with: kInvalidArgument and kResourceExhausted
// -> EINVAL, kPermissionDenied and kFailedPrecondition -> EPERM, kUnimplemented -> EOPNOTSUPP,
// anything else -> EIO.
int ErrnoFor(const absl::Status& status);

}  // namespace tunnelmesh::uapi
