// `tunnelmesh-agent join`'s options and their checks, done before anything is touched: the
// coordinator address, the token files, --kind, --ca-file, --ca-hash; and the node key kept in the
// state directory.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

inline constexpr uint16_t kDefaultCoordinatorPort = 7700;

struct JoinOptions {
  std::string coordinator;  // host[:port]
  // Exactly one of: the mesh's join token, or (in a Kubernetes pod) the ServiceAccount token file,
  // re-read at every registration because the kubelet rotates it.
  std::string token_file;
  std::string kubernetes_token_file;
  std::string mesh;               // empty: the coordinator's only mesh
  std::string kind = "External";  // Node, Pod or External
  std::string ca_file;            // the coordinator's CA certificate (PEM), instead of fetching it
  std::string name;
  std::map<std::string, std::string> labels;
  // More DNS names of this member: "<alias>.<mesh domain>" (DNS labels, at most kMaxAliases).
  std::vector<std::string> aliases;
  std::string state_dir;
  std::string interface_name = "tm0";
  std::string ca_hash;
  uint16_t listen_port = 51820;
  // The SSH path's server (TCP; docs/ports.md); `no_ssh` runs none and dials none.
  uint16_t ssh_port = 7722;
  bool no_ssh = false;
  // Dial peers' SSH servers through this command (OpenSSH ProxyCommand syntax), e.g. a jump host.
  std::string ssh_proxy_command;
  // The mesh DNS server: on the mesh IPs and `dns_listen`, port `dns_port`; `dns_upstream`
  // (IP[:port]) answers what is outside the mesh zone; `no_dns` turns it off. `no_resolved`: do
  // not register the mesh domain with systemd-resolved (implied by `no_dns`).
  bool no_dns = false;
  bool no_resolved = false;
  uint16_t dns_port = 53;
  std::string dns_listen = "127.0.0.100";
  std::string dns_upstream;
  // --timeout: give up when not registered within it (absl duration text); empty: wait for ever.
  std::string timeout;
  // Exit peers (docs/remote-access.md): --advertise-exit offers this member as one; --exit-peer
  // NAME (repeatable, failover order) routes its internet traffic through one. Either flag sends
  // RegisterRequest.exit, which replaces what the member's MeshPeer spec says.
  bool advertise_exit = false;
  std::vector<std::string> exit_peers;
  bool exit_allow_lan = false;  // --exit-allow-lan
  bool exit_fail_open = false;  // --exit-fail-open
  std::string exit_dns;         // --exit-dns IP
};

struct HostPort {
  std::string host;  // Without brackets.
  uint16_t port = kDefaultCoordinatorPort;
};

// "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address; the port defaults to 7700.
// Anything else (a URL, a path, an empty string, a name with characters no host name has) is
// InvalidArgument with a message that shows the accepted forms.
[[nodiscard]] absl::StatusOr<HostPort> ParseHostPort(const std::string& text);

// What the checks found: the coordinator, the join token (empty with --kubernetes-token-file) and
// the CA PEM from --ca-file (empty: fetch and pin).
struct CheckedJoinOptions {
  HostPort coordinator;
  // The DNS server's loopback address and upstream (none with --no-dns or without the flag).
  std::optional<IpAddress> dns_listen;
  std::optional<Endpoint> dns_upstream;
  // Register the mesh domain with systemd-resolved where it runs (DNS on, no --no-resolved).
  bool register_resolved = false;
  std::string join_token;
  std::string ca_pem;
  std::optional<absl::Duration> timeout;  // --timeout; none: wait for ever
  std::optional<IpAddress> exit_dns;      // --exit-dns
};

// Checks the flags; an InvalidArgument message names the flag to fix.
[[nodiscard]] absl::StatusOr<CheckedJoinOptions> CheckJoinOptions(const JoinOptions& options);

// The token in `path`, trimmed; InvalidArgument naming `flag` and the errno's text ("No such file
// or directory", "Permission denied") or "is empty". The path itself is never in the message: a
// token pasted where the path belongs must not be echoed.
[[nodiscard]] absl::StatusOr<std::string> ReadTokenFile(const std::string& flag,
                                                        const std::string& path);

// `text` as a DNS label: lowercase letters and digits, other runs of characters made one '-',
// at most 63 characters, no '-' at either end ("Bob's Laptop" -> "bob-s-laptop"); may be empty.
std::string MakeDnsLabel(std::string_view text);
// The member name join asks for without --name: the host name's first label as a DNS label
// ("Build-Host-7.example.com" -> "build-host-7"); empty when nothing is left (the coordinator
// then names the member member-XXXXXX).
std::string DefaultMemberName(std::string_view host_name);

// The node key in DIR/node.key, created (mode 0600, atomically) when missing.
[[nodiscard]] absl::StatusOr<SecretKey> LoadOrCreateNodeKey(const std::string& state_dir);

}  // namespace tunnelmesh
