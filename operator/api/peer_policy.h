// PeerPolicy specs as the coordinator keeps them: parsed from the object's JSON (a Kubernetes
// object, or a standalone manifest converted from YAML) and checked beyond what the CRD schema can
// express, with errors that name the field. operator/policy/ compiles them into per-member
// packet-filter rules.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

struct LabelRequirement {
  std::string key;
  std::string op;  // In, NotIn, Exists, DoesNotExist
  std::vector<std::string> values;
  bool operator==(const LabelRequirement&) const = default;
};

// A Kubernetes label selector; empty selects everything.
struct LabelSelector {
  std::map<std::string, std::string> match_labels;
  std::vector<LabelRequirement> match_expressions;
  bool operator==(const LabelSelector&) const = default;
};

// A CIDR and the parts of it that are excluded (each inside `cidr`, same family).
struct IpBlock {
  Prefix cidr;
  std::vector<Prefix> except;
  bool operator==(const IpBlock&) const = default;
};

// `to: [{internet: {}}]`: the internet (every address outside the mesh's ranges) through an exit
// peer, for the members `from` selects (docs/remote-access.md). The exits it covers are the members
// that offer themselves as one and whose labels `exit_selector` matches (absent: every exit).
struct InternetTerm {
  std::optional<LabelSelector> exit_selector;
  bool operator==(const InternetTerm&) const = default;
};

// One entry of `from` or `to`. The fields present are ANDed: MeshPeers by label (`peer`), by name,
// by kind; or members of kind Pod by their namespace's labels and their own labels. An ipBlock
// stands alone in its entry and selects addresses, not members; so does `internet` (only in `to`).
struct PeerSelectorTerm {
  std::optional<LabelSelector> peer;
  std::optional<LabelSelector> namespace_selector;
  std::optional<LabelSelector> pod;
  std::vector<std::string> names;  // Member names; empty: any.
  std::vector<std::string> kinds;  // "Node", "Pod", "External"; empty: any.
  std::optional<IpBlock> ip_block;
  std::optional<InternetTerm> internet;
  bool operator==(const PeerSelectorTerm&) const = default;
};

struct PortRule {
  std::string protocol;   // TCP, UDP, ICMP, Any
  uint16_t port = 0;      // 0: all
  uint16_t end_port = 0;  // 0: just `port`
  bool operator==(const PortRule&) const = default;
};

struct PeerPolicySpec {
  std::string name;
  std::string mesh;
  bool deny = false;
  // Terms are ORed; an empty list (or none given) selects every member.
  std::vector<PeerSelectorTerm> from;
  std::vector<PeerSelectorTerm> to;
  std::vector<PortRule> ports;  // Empty: all traffic.
  bool operator==(const PeerPolicySpec&) const = default;
};

// Parses and checks a PeerPolicy object. A field the CRD does not declare (at the top level, in
// metadata or anywhere in spec) is an error naming its path and the closest known field.
[[nodiscard]] absl::StatusOr<PeerPolicySpec> ParsePeerPolicy(const nlohmann::json& object);

// Kubernetes label syntax: the key's optional DNS-subdomain prefix and '/', a name and a value of
// at most 63 alphanumerics, '-', '_' and '.', starting and ending alphanumeric (the value may be
// empty). The error names the label.
[[nodiscard]] absl::Status CheckLabel(const std::string& key, const std::string& value);

}  // namespace tunnelmesh
