// The agent's stateful packet filter, sans-IO: rules compiled from PeerPolicies (by the
// coordinator, per member) go in, packets and the time go in, a verdict comes out. Nothing here
// knows Kubernetes, sockets or threads of its own.
//
// Model: a member filters what arrives from the mesh (Inbound) and records what it sends
// (Outbound), so that replies to flows it started pass without a rule. Destinations in the rule
// set's egress prefixes (members that cannot filter themselves) are also checked on send. Deny
// rules win over allow rules; traffic no rule decides gets the rule set's default. Connection
// tracking lets replies of allowed flows through (TCP, UDP, ICMP echo, and ICMP errors quoting a
// tracked flow); its table is bounded. A new rule set is swapped in atomically: tracked flows that
// it still allows go on, the others stop at their next packet (in either direction; the cut flow
// stays in the table, dropping its packets, until both sides have been silent for its timeout,
// so that neither side revives it as a new flow). Later IP fragments carry no ports and pass
// untracked (see l4.h); their first fragment was decided.
//
// Threads: the data plane calls Outbound from its outbound thread and Inbound from its inbound
// thread at the same time; SetRules, Explain and the counters from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "lib/base/clock.h"
#include "lib/net/ip.h"
#include "lib/noise/counters.h"

namespace tunnelmesh::filter {

enum class Action : uint8_t { kDeny, kAllow };

enum class Protocol : uint8_t {
  kAny,
  kTcp,
  kUdp,
  kIcmp,  // ICMP for IPv4, ICMPv6 for IPv6.
};

struct PortRange {
  uint16_t first = 0;  // Inclusive.
  uint16_t last = 0;
  bool operator==(const PortRange&) const = default;
};

// Matches when the source is in `sources` and the destination in `destinations` (either empty:
// any), the protocol is `protocol`, and for TCP and UDP the destination port is in `ports` (empty:
// any).
struct Rule {
  std::vector<Prefix> sources;
  std::vector<Prefix> destinations;
  Protocol protocol = Protocol::kAny;
  std::vector<PortRange> ports;
  Action action = Action::kAllow;
  uint32_t policy = 0;  // Index into RuleSet::policies.
  bool operator==(const Rule&) const = default;
};

struct RuleSet {
  std::vector<std::string> policies;  // PeerPolicy names.
  std::vector<Rule> rules;
  Action default_action = Action::kDeny;
  std::vector<Prefix> egress;  // Destinations also checked on send.
  bool operator==(const RuleSet&) const = default;
};

// What a flow's first packet looks like to the rules.
struct FlowKey {
  IpAddress source;
  IpAddress destination;
  Protocol protocol = Protocol::kAny;  // kAny: another IP protocol (matched only by kAny rules).
  uint16_t destination_port = 0;       // TCP and UDP only.
};

struct Verdict {
  Action action = Action::kDeny;
  // The rule's RuleSet::policies index; kDefault when no rule decided.
  static constexpr uint32_t kDefault = UINT32_MAX;
  uint32_t policy = kDefault;
};

// How large the Matcher's precomputed cross-product tables may grow (cells of 4 bytes each, per
// table; the work to build them is bounded in proportion). A rule set whose tables would be
// larger is matched by intersecting per-dimension rule bitsets instead: still no per-rule scan,
// but a cost that grows with rules / 64 (see matcher.cc).
struct MatcherLimits {
  size_t max_table_cells = size_t{1} << 24;
};

// A rule set compiled for lookups that do not scan the rules (the decision time per packet must
// stay under 100 ns with 10,000 rules). Immutable; thread-safe.
//
// Decide: a deny rule that matches wins (the lowest-indexed of them names the policy); otherwise
// the lowest-indexed allow rule that matches; otherwise the rule set's default (policy kDefault).
// Ports are checked only for TCP and UDP flows: an ICMP flow or one of another protocol matches a
// rule of its protocol (or kAny) whatever the rule's ports. A PortRange with first > last matches
// nothing. Prefixes of the other family than the flow's never match; empty sources or
// destinations match both families.
class Matcher {
 public:
  explicit Matcher(RuleSet rules);
  Matcher(RuleSet rules, const MatcherLimits& limits);
  ~Matcher();
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  Verdict Decide(const FlowKey& flow) const;
  const RuleSet& rules() const;
  // Whether `destination` is in RuleSet::egress (checked on send).
  bool IsEgress(const IpAddress& destination) const;

  // For benchmarks and tests: whether the cross-product tables were built (else the bitset
  // fallback decides), and the bytes the compiled tables take.
  bool uses_cross_product() const;
  size_t table_bytes() const;

 private:
  struct Tables;
  std::unique_ptr<const Tables> tables_;
};

// Why a packet was dropped (counted; shown by `status --json` under "filter").
enum class Drop : uint8_t {
  kPolicyDenied,   // A deny rule of a PeerPolicy matched.
  kDefaultDenied,  // No rule matched and the default is deny.
  kTableFull,      // A new flow could not be tracked: the connection table is full.
  kMalformed,      // The transport header is cut short or invalid.
  kCount,
};

inline const char* DropName(Drop d) {
  static constexpr const char* kNames[] = {"policy_denied", "default_denied", "conntrack_full",
                                           "malformed"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Drop::kCount));
  return kNames[static_cast<size_t>(d)];
}

using DropCounters = noise::EnumCounters<Drop>;

struct Options {
  size_t max_flows = 65536;
  Duration tcp_established_timeout = std::chrono::hours(2);
  Duration tcp_transitory_timeout = std::chrono::seconds(120);  // Handshake, closing.
  Duration udp_timeout = std::chrono::seconds(30);
  Duration udp_stream_timeout = std::chrono::seconds(180);  // UDP with replies seen.
  Duration icmp_timeout = std::chrono::seconds(30);
};

// Packets allowed and denied per policy of the current rule set (the default last).
struct PolicyCount {
  std::string policy;  // Empty for the Mesh's default.
  uint64_t allowed = 0;
  uint64_t denied = 0;
};

struct Explanation {
  Verdict verdict;
  std::string policy;  // Empty when the default decided.
};

class Filter {
 public:
  explicit Filter(const Options& options = {});
  ~Filter();
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;

  // Installs a rule set; null turns filtering off (everything passes, nothing is tracked), which
  // is the state before the first rule set arrives and for agents run from a WireGuard config.
  void SetRules(std::shared_ptr<const Matcher> rules);
  bool enabled() const;

  // A packet from the mesh, after decryption and the source check; true to deliver it.
  bool Inbound(absl::Span<const uint8_t> packet, MonoTime now);
  // A packet from the TUN device about to be sent; true to send it. Only egress destinations
  // can be refused.
  bool Outbound(absl::Span<const uint8_t> packet, MonoTime now);

  // What the current rules decide for a new flow (for `tunnelmesh-agent explain`).
  Explanation Explain(const FlowKey& flow) const;

  // Erases expired flows now (the table also does it by itself when it is full); for a timer
  // of the agent, so that tracked_flows() reads as live flows. Any thread.
  void ExpireFlows(MonoTime now);

  const DropCounters& drops() const;
  std::vector<PolicyCount> policy_counts() const;
  // Flows in the table, including cut ones and expired ones not reclaimed yet.
  size_t tracked_flows() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tunnelmesh::filter
