// The kernel side of exit peers, as `ip` and `nft` commands (iproute2 and nftables from Debian,
// run through node-agent/dns/resolved.h's CommandRunner, so tests fake them):
//
// Client (a member that routes its internet traffic through an exit peer), as wg-quick does for
// `AllowedIPs = 0.0.0.0/0`:
// - routing table `table` holds `default dev IFACE` (IPv4, and IPv6 when the interface has an IPv6
//   address; `unreachable default` for IPv6 otherwise, so IPv6 neither leaks nor waits);
// - at priority `priority`: `to ADDRESS lookup main` for every address that must not enter the
//   tunnel (the coordinator, the relay, every peer's underlay endpoints);
// - at priority + 1 (--exit-allow-lan only): DNS (UDP and TCP port 53) to the LAN prefixes still
//   goes into `table`, so a LAN resolver never sees the host's queries;
// - at priority + 2 (--exit-allow-lan only): `to LAN-PREFIX lookup main`;
// - at priority + 3: `not fwmark MARK lookup table`: everything else, except the agent's own UDP
//   socket, which carries SO_MARK `fwmark`;
// - with an exit DNS resolver: an nftables table `tunnelmesh_exitdns_IFACE` that DNATs every DNS
//   query the host sends (UDP and TCP port 53, not to loopback or the mesh) to that resolver, which
//   is reached through the tunnel like everything else.
// Fail-open with no healthy exit lifts the rules (Apply with route_all false); Remove takes all of
// it away; PurgeStale removes what a crashed agent left (rules at these priorities, the table's
// routes, the nftables tables).
//
// Exit (a member that forwards other members' internet traffic): IPv4 forwarding on (and IPv6
// when a client has an IPv6 prefix), each restored on Remove if the agent turned it on, and an
// nftables table `tunnelmesh_exit_IFACE`: forwarded packets from IFACE are accepted when their
// source is a client prefix, their destination is in the mesh or they go back out of IFACE, and
// dropped (counted) otherwise; and
// the clients' packets leaving by another interface are masqueraded.
//
// Threads: each object belongs to the agent's control thread; the commands block that thread for
// the few milliseconds they take (with a timeout).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "lib/net/ip.h"
#include "node-agent/dns/resolved.h"

namespace tunnelmesh {

// The numbers the client side uses for an interface: the routing table and fwmark (the same
// value) and the first rule priority. Derived from the interface name, so two agents on one host
// differ and a restarted agent finds what it left.
struct ExitKernelIds {
  uint32_t table = 0;
  uint32_t fwmark = 0;
  uint32_t priority = 0;
};
ExitKernelIds ExitKernelIdsFor(const std::string& interface_name);

// The nftables table names for an interface ("tm0" -> "tunnelmesh_exit_tm0").
std::string ExitTableName(const std::string& interface_name);
std::string ExitDnsTableName(const std::string& interface_name);

struct ClientRoutes {
  bool route_all = false;          // False: no rules at all (no exit, or fail-open lifted them).
  std::set<IpAddress> bypass;      // Kept out of the tunnel.
  std::vector<Prefix> lan;         // --exit-allow-lan: directly connected prefixes.
  bool ipv6 = false;               // The interface has an IPv6 address.
  std::optional<IpAddress> dns;    // --exit-dns: every DNS query of the host goes there.
  std::vector<Prefix> mesh_cidrs;  // Not redirected (the mesh's own resolvers).
  bool operator==(const ClientRoutes&) const = default;
};

// `ip rule` arguments (without add/del) for one family, in the order they are added.
std::vector<std::string> ClientRuleSpecs(const ClientRoutes& routes, const ExitKernelIds& ids,
                                         IpAddress::Family family);
// The nft script of the DNS redirect (empty when routes.dns is unset or !route_all).
std::string ClientDnsScript(const std::string& interface_name, const ClientRoutes& routes);
// The nft script of the exit's table (replaces any earlier one atomically).
std::string ExitForwardScript(const std::string& interface_name,
                              const std::vector<Prefix>& client_prefixes,
                              const std::vector<Prefix>& mesh_cidrs);

// Runs the client side. `scratch` is a file path the nft script is written to.
class ExitClientKernel {
 public:
  ExitClientKernel(std::string interface_name, CommandRunner* runner, std::string scratch);
  const ExitKernelIds& ids() const { return ids_; }
  // Removes rules at this interface's priorities, the table's routes and the DNS table.
  [[nodiscard]] absl::Status PurgeStale();
  // Makes the kernel match `routes` (only what changed is touched; rules are added before the old
  // ones go, so nothing leaks in between).
  [[nodiscard]] absl::Status Apply(const ClientRoutes& routes);
  // Takes everything away (as Apply of route_all false).
  [[nodiscard]] absl::Status Remove();
  const ClientRoutes& applied() const { return applied_; }

 private:
  [[nodiscard]] absl::Status Ip(IpAddress::Family family, const std::vector<std::string>& lines);
  [[nodiscard]] absl::Status SetSysctl(const std::string& path, const std::string& value);

  const std::string interface_name_;
  CommandRunner* const runner_;
  const std::string scratch_;
  const ExitKernelIds ids_;
  ClientRoutes applied_;
  std::vector<std::string> rules4_, rules6_;
  bool table_routes_ = false;
  bool dns_table_ = false;
};

// Runs the exit side.
class ExitForwarder {
 public:
  ExitForwarder(std::string interface_name, CommandRunner* runner, std::string scratch,
                std::string proc_sys = "/proc/sys");
  // Removes a table a crashed agent left, and turns forwarding off again where it turned it on.
  [[nodiscard]] absl::Status PurgeStale();
  // Forwards and masquerades for `client_prefixes` (empty: removes the table).
  [[nodiscard]] absl::Status Apply(const std::vector<Prefix>& client_prefixes,
                                   const std::vector<Prefix>& mesh_cidrs);
  [[nodiscard]] absl::Status Remove();
  bool active() const { return active_; }

 private:
  [[nodiscard]] absl::Status EnableForwarding(const std::string& key, bool* changed);
  // The file that records that this agent turned `key` on.
  std::string MarkerPath(const std::string& key) const;

  const std::string interface_name_;
  CommandRunner* const runner_;
  const std::string scratch_;
  const std::string proc_sys_;
  bool active_ = false;
  std::vector<Prefix> applied_;
  bool enabled_v4_ = false;  // This agent turned forwarding on (restored by Remove).
  bool enabled_v6_ = false;
};

}  // namespace tunnelmesh
