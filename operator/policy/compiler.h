// The PeerPolicy compiler's building blocks: what it knows of a member, which members a policy's
// `from` and `to` select, the prefix arithmetic for ipBlocks, who enforces for whom, and a plain
// evaluation of a compiled rule set (for the coordinator's Explain; the agent's fast matcher lives
// in lib/filter). Pure functions over values: no I/O, no Kubernetes, no gRPC besides the proto
// types. The incremental engine that turns these into per-member rule sets is engine.h.
//
// Who enforces (docs/crd-reference.md, PeerPolicy): a member that runs an agent filters what
// arrives from the mesh for its own addresses; a Pod member's host filters for it; a member that
// runs no agent (a static WireGuard peer) cannot filter, so every agent member checks traffic it
// sends there (FilterRules.egress_prefixes and rules whose destinations are the static member).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lib/net/ip.h"
#include "operator/api/peer_policy.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh::policy {

namespace coord = ::tunnelmesh::coordinator::v1;

// The namespace label Kubernetes sets on every namespace; a Pod member whose namespace labels are
// not known gets just this one.
inline constexpr char kNamespaceNameLabel[] = "kubernetes.io/metadata.name";

struct Member {
  std::string name;  // Unique within the mesh.
  coord::MemberKind kind = coord::MEMBER_KIND_EXTERNAL;
  std::map<std::string, std::string> labels;
  // Mesh IPs as host prefixes, and prefixes the member routes.
  std::vector<Prefix> addresses;
  // False for a static WireGuard peer: it cannot filter, its senders do.
  bool runs_agent = true;
  // Kind Pod only: its namespace, that namespace's labels, and the member hosting it (which
  // filters for it). A Pod without a host filters for itself when it runs an agent.
  std::string namespace_name;
  std::map<std::string, std::string> namespace_labels;
  std::string host;
  // It offers itself as an exit peer (MeshPeer spec.exitPeer, `join --advertise-exit`).
  bool exit = false;

  bool operator==(const Member&) const = default;
};

// Kubernetes label-selector semantics; an empty selector selects everything.
bool SelectorMatches(const LabelSelector& selector,
                     const std::map<std::string, std::string>& labels);
// Whether one `from`/`to` entry selects the member (its fields ANDed). ipBlock entries select
// addresses, never members.
bool TermSelects(const PeerSelectorTerm& term, const Member& member);
// Whether a whole side selects the member: any entry does, or the side is empty (every member).
bool SideSelects(const std::vector<PeerSelectorTerm>& side, const Member& member);
// The ipBlocks of a side as prefixes, their excepts cut out.
std::vector<Prefix> SideBlocks(const std::vector<PeerSelectorTerm>& side);

// Whether an `internet` entry of the side (a policy's `to`) covers the member as an exit peer: it
// offers itself as one and the entry's exitSelector (if any) matches its labels.
bool InternetThrough(const std::vector<PeerSelectorTerm>& side, const Member& member);
// "The internet" of a mesh: every IPv4 and IPv6 address outside its ranges, as disjoint prefixes.
std::vector<Prefix> InternetPrefixes(const std::vector<Prefix>& mesh_ranges);

// The member that filters traffic to `member`: itself, its host (a Pod), or "" (nobody: a static
// peer, whose senders check on send).
std::string EnforcerOf(const Member& member);

// `prefix` without the parts covered by `except`, as disjoint prefixes (sorted).
std::vector<Prefix> Subtract(const Prefix& prefix, const std::vector<Prefix>& except);
// The prefixes covered by both lists (sorted, duplicates removed).
std::vector<Prefix> Intersect(const std::vector<Prefix>& a, const std::vector<Prefix>& b);
// Sorts and removes duplicates and prefixes inside another one of the list.
void Normalize(std::vector<Prefix>* prefixes);

// What a rule set decides for a flow's first packet: deny rules win over allow rules; the
// default decides when no rule matches. `policy` is empty for the default.
struct Decision {
  coord::FilterAction action = coord::FILTER_ACTION_DENY;
  std::string policy;
};
Decision Evaluate(const coord::FilterRules& rules, const IpAddress& source,
                  const IpAddress& destination, coord::FilterProtocol protocol, uint16_t port);

}  // namespace tunnelmesh::policy
