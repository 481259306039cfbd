// The "filter" object of `tunnelmesh-agent status --json` and the line the human `status` prints
// for it. The JSON fields (documented in docs/configuration.md):
//   enabled             a rule set is installed (false before the first one, and in config mode)
//   default_action      "allow" or "deny" (the Mesh's spec.defaultAction); absent when disabled
//   rules               rules in the installed set; policies: how many PeerPolicies they came from
//   egress_prefixes     destinations this member checks on send (members without an agent)
//   policies            [{"name", "allowed", "denied"}]: packets each policy decided
//   default             {"allowed", "denied"}: packets the Mesh default decided
//   drops               {"policy_denied", "default_denied", "conntrack_full", "malformed"}
//   tracked_flows       connections in the tracking table
//   rule_sets_applied, rule_sets_rejected
//                       rule sets from the coordinator installed, and refused as invalid (the
//                       previous one then stays)
//
// Threads: FilterStatusJson reads the filter's counters (any thread) and `rules`, which the caller
// owns (the agent's control thread).
#pragma once

#include <cstdint>
#include <string>

#include "lib/filter/filter.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh::policy {

struct RuleSetHistory {
  uint64_t applied = 0;
  uint64_t rejected = 0;
};

// `rules`: the installed rule set, null when none.
nlohmann::json FilterStatusJson(const filter::Filter& filter, const filter::RuleSet* rules,
                                const RuleSetHistory& history);

// "filter: on, default deny, 12 rules from 3 policies, 4 flows tracked, dropped 7
// (default_denied=6 policy_denied=1)" or "filter: off (no rule set)".
std::string FormatFilterStatus(const nlohmann::json& filter);

}  // namespace tunnelmesh::policy
