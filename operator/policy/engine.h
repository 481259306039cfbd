// The incremental PeerPolicy compiler of one mesh: members and policies go in, per enforcing
// member a coord::FilterRules comes out, and after each change only the members whose rule set
// bytes changed are reported (TakeDirty), so the coordinator sends rule sets to them alone.
//
// What a member's rule set holds (compiler.h says who enforces for whom):
//   - for each policy whose `to` selects this member or a Pod it hosts (or whose `to` ipBlocks
//     cover its addresses): rules from the addresses `from` selects (members' addresses and
//     ipBlocks minus their excepts) to those destinations, one rule per protocol of `ports`;
//   - when it offers itself as an exit peer, for each policy whose `to` has an `internet` entry
//     covering it (compiler.h, InternetThrough): rules from the addresses `from` selects to the
//     internet (every address outside the mesh's ranges, SetMeshRanges), one per protocol; the
//     sources of such Allow policies are its exit clients (ExitClientsFor), the only members it
//     forwards for whatever the Mesh's default action;
//   - egress_prefixes: the addresses of every member that runs no agent, and rules from this
//     member's own addresses to those that a policy's `to` selects;
//   - the Mesh's default action.
// Rules are ordered by policy name, then protocol; prefixes are sorted. Equal inputs give
// byte-equal rule sets. FilterRules.policies lists only the policies this member's rules came from.
//
// Incremental: each policy keeps the member names its sides select. A member joining, leaving or
// changing is matched against each policy once; only the enforcers whose rules can change are
// recompiled (its own enforcer, the enforcers of a policy's destinations when the member enters or
// leaves its sources, every agent member when it runs no agent, or when a policy has `to`
// ipBlocks). A policy change recomputes that policy's sides and recompiles the enforcers of its
// old and new destinations. Recompiled rule sets whose bytes did not change are not reported.
//
// Thread-compatible: the coordinator calls it under its lock. Bounded by the members and policies
// the coordinator holds.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "operator/api/peer_policy.h"
#include "operator/policy/compiler.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh::policy {

// What a policy selects and compiled to, for its status.
struct PolicyStats {
  size_t selected_sources = 0;       // Members `from` selects.
  size_t selected_destinations = 0;  // Members `to` selects, exit peers of `internet` included.
  bool source_blocks = false;        // `from` has ipBlocks (it may select no member on purpose).
  bool destination_blocks = false;
  size_t compiled_rules = 0;  // Rules in all members' rule sets.
  bool operator==(const PolicyStats&) const = default;
};

struct EngineCounters {
  uint64_t recompiled = 0;  // Rule sets rebuilt.
  uint64_t changed = 0;     // ... whose bytes changed.
};

class Engine {
 public:
  explicit Engine(coord::FilterAction default_action = coord::FILTER_ACTION_DENY);

  // Adds or replaces a member (by name).
  void UpsertMember(Member member);
  void RemoveMember(const std::string& name);
  // Replaces every policy: only added, removed and changed ones (by name) are recompiled. Policies
  // of another mesh must not be passed.
  void SetPolicies(const std::vector<PeerPolicySpec>& policies);
  void UpsertPolicy(const PeerPolicySpec& policy);
  void RemovePolicy(const std::string& name);
  void SetDefaultAction(coord::FilterAction action);
  // The mesh's address ranges: what is not in them is the internet of `internet` destinations.
  void SetMeshRanges(const std::vector<Prefix>& ranges);

  // The members whose rule sets changed since the last call, with their new rule sets (a member's
  // first rule set counts as a change). Members that left are not listed.
  std::map<std::string, coord::FilterRules> TakeDirty();
  // The member's current rule set; null when it enforces nothing (a static or unknown member).
  const coord::FilterRules* RulesFor(const std::string& member) const;
  // The source prefixes an exit peer forwards to the internet for (the `from` sides of the Allow
  // policies whose `internet` entries cover it), sorted; empty for every other member.
  std::vector<Prefix> ExitClientsFor(const std::string& member) const;
  std::optional<PolicyStats> StatsFor(const std::string& policy) const;
  const Member* FindMember(const std::string& name) const;
  const std::map<std::string, Member>& members() const { return members_; }
  const EngineCounters& counters() const { return counters_; }

 private:
  struct PolicyState {
    PeerPolicySpec spec;
    std::set<std::string> sources;
    std::set<std::string> destinations;
    // Exit peers its `internet` entries cover: their rule sets hold its internet rules.
    std::set<std::string> exits;
    std::vector<Prefix> from_blocks;
    std::vector<Prefix> to_blocks;
    // Addresses of `sources` plus from_blocks; rebuilt when sources_stale.
    std::vector<Prefix> source_prefixes;
    bool sources_stale = true;
    size_t compiled_rules = 0;
  };
  struct Compiled {
    coord::FilterRules rules;
    std::string bytes;
    std::map<std::string, size_t> per_policy;  // Rules from each policy.
    std::vector<Prefix> exit_clients;
  };

  // Members that filter for themselves or hosted pods.
  std::vector<std::string> AllEnforcers() const;
  const std::vector<Prefix>& SourcesOf(PolicyState* policy);
  // The addresses `enforcer` filters for: its own and its hosted pods'.
  std::vector<Prefix> GuardedBy(const std::string& enforcer) const;
  void AddEnforcersOf(const std::set<std::string>& members, std::set<std::string>* out) const;
  // Recomputes a policy's sides and collects the enforcers its change touches.
  void Evaluate(PolicyState* policy, std::set<std::string>* candidates);
  void CandidatesOfPolicy(const PolicyState& policy, std::set<std::string>* out) const;
  void Recompile(const std::set<std::string>& candidates);
  coord::FilterRules Compile(const std::string& enforcer, std::map<std::string, size_t>* counts,
                             std::vector<Prefix>* exit_clients);

  coord::FilterAction default_action_;
  std::vector<Prefix> internet_;
  std::map<std::string, Member> members_;
  std::map<std::string, PolicyState> policies_;
  // Host -> the Pod members it filters for.
  std::map<std::string, std::set<std::string>> hosted_;
  // Members that run no agent (no enforcer).
  std::set<std::string> unenforced_;
  std::map<std::string, Compiled> compiled_;
  std::set<std::string> dirty_;
  EngineCounters counters_;
};

}  // namespace tunnelmesh::policy
