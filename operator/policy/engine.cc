#include "operator/policy/engine.h"

#include <algorithm>
#include <utility>

namespace tunnelmesh::policy {
namespace {

coord::FilterProtocol ProtocolOf(const std::string& name) {
  if (name == "TCP") return coord::FILTER_PROTOCOL_TCP;
  if (name == "UDP") return coord::FILTER_PROTOCOL_UDP;
  if (name == "ICMP") return coord::FILTER_PROTOCOL_ICMP;
  return coord::FILTER_PROTOCOL_ANY;
}

// One rule per protocol that `ports` names (ports merged), or one for all traffic.
void AddRules(const PeerPolicySpec& spec, uint32_t index, const std::vector<Prefix>& sources,
              const std::vector<Prefix>& destinations, coord::FilterRules* out) {
  struct Ports {
    bool all = false;
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
  };
  std::map<coord::FilterProtocol, Ports> by_protocol;
  if (spec.ports.empty()) by_protocol[coord::FILTER_PROTOCOL_ANY].all = true;
  for (const PortRule& p : spec.ports) {
    Ports& ports = by_protocol[ProtocolOf(p.protocol)];
    if (p.port == 0) {
      ports.all = true;
    } else {
      ports.ranges.emplace_back(p.port, p.end_port == 0 ? p.port : p.end_port);
    }
  }
  for (auto& [protocol, ports] : by_protocol) {
    coord::FilterRule* rule = out->add_rules();
    for (const Prefix& s : sources) rule->add_sources(s.ToString());
    for (const Prefix& d : destinations) rule->add_destinations(d.ToString());
    rule->set_protocol(protocol);
    rule->set_action(spec.deny ? coord::FILTER_ACTION_DENY : coord::FILTER_ACTION_ALLOW);
    rule->set_policy(index);
    if (ports.all) continue;
    std::sort(ports.ranges.begin(), ports.ranges.end());
    ports.ranges.erase(std::unique(ports.ranges.begin(), ports.ranges.end()), ports.ranges.end());
    for (const auto& [first, last] : ports.ranges) {
      coord::PortRange* range = rule->add_ports();
      range->set_first(first);
      range->set_last(last);
    }
  }
}

}  // namespace

Engine::Engine(coord::FilterAction default_action) : default_action_(default_action) {}

std::vector<std::string> Engine::AllEnforcers() const {
  std::vector<std::string> out;
  for (const auto& [name, m] : members_) {
    if (EnforcerOf(m) == name) out.push_back(name);
  }
  return out;
}

void Engine::AddEnforcersOf(const std::set<std::string>& members,
                            std::set<std::string>* out) const {
  for (const std::string& name : members) {
    auto it = members_.find(name);
    if (it == members_.end()) continue;
    if (std::string e = EnforcerOf(it->second); !e.empty()) out->insert(std::move(e));
  }
}

const std::vector<Prefix>& Engine::SourcesOf(PolicyState* policy) {
  if (policy->sources_stale) {
    std::vector<Prefix> prefixes = policy->from_blocks;
    for (const std::string& name : policy->sources) {
      const Member& m = members_.at(name);
      prefixes.insert(prefixes.end(), m.addresses.begin(), m.addresses.end());
    }
    Normalize(&prefixes);
    policy->source_prefixes = std::move(prefixes);
    policy->sources_stale = false;
  }
  return policy->source_prefixes;
}

std::vector<Prefix> Engine::GuardedBy(const std::string& enforcer) const {
  std::vector<Prefix> out;
  auto self = members_.find(enforcer);
  if (self != members_.end()) out = self->second.addresses;
  if (auto pods = hosted_.find(enforcer); pods != hosted_.end()) {
    for (const std::string& pod : pods->second) {
      const Member& m = members_.at(pod);
      out.insert(out.end(), m.addresses.begin(), m.addresses.end());
    }
  }
  Normalize(&out);
  return out;
}

void Engine::UpsertMember(Member member) {
  const std::string name = member.name;
  std::optional<Member> old;
  if (auto it = members_.find(name); it != members_.end()) {
    if (it->second == member) return;
    old = it->second;
  }
  std::set<std::string> candidates;
  const bool was_unenforced = old && EnforcerOf(*old).empty();
  const bool unenforced = EnforcerOf(member).empty();
  if (old) {
    if (std::string e = EnforcerOf(*old); !e.empty()) candidates.insert(e);
    if (old->kind == coord::MEMBER_KIND_POD && !old->host.empty()) hosted_[old->host].erase(name);
  }
  if (std::string e = EnforcerOf(member); !e.empty()) candidates.insert(e);
  if (member.kind == coord::MEMBER_KIND_POD && !member.host.empty()) {
    hosted_[member.host].insert(name);
  }
  if (unenforced) {
    unenforced_.insert(name);
  } else {
    unenforced_.erase(name);
  }
  const bool addresses_changed = !old || old->addresses != member.addresses;
  members_[name] = std::move(member);
  const Member& m = members_.at(name);
  // Egress prefixes (and rules to it) of every agent member change with a static member.
  bool everyone = was_unenforced || unenforced;
  for (auto& [policy_name, p] : policies_) {
    const bool was_source = p.sources.count(name) > 0;
    const bool is_source = SideSelects(p.spec.from, m);
    const bool was_destination = p.destinations.count(name) > 0;
    const bool is_destination = SideSelects(p.spec.to, m);
    if (InternetThrough(p.spec.to, m)) {
      p.exits.insert(name);  // Its own enforcer is a candidate already.
    } else {
      p.exits.erase(name);
    }
    if (is_source) {
      p.sources.insert(name);
    } else {
      p.sources.erase(name);
    }
    if (is_destination) {
      p.destinations.insert(name);
    } else {
      p.destinations.erase(name);
    }
    if (was_source != is_source || (is_source && addresses_changed)) {
      p.sources_stale = true;
      AddEnforcersOf(p.destinations, &candidates);
      AddEnforcersOf(p.exits, &candidates);
      everyone = everyone || !p.to_blocks.empty();
    }
    (void)was_destination;  // Its own enforcer is a candidate already.
  }
  if (everyone) {
    for (std::string& e : AllEnforcers()) candidates.insert(std::move(e));
  }
  Recompile(candidates);
}

void Engine::RemoveMember(const std::string& name) {
  auto it = members_.find(name);
  if (it == members_.end()) return;
  const Member old = it->second;
  std::set<std::string> candidates;
  if (std::string e = EnforcerOf(old); !e.empty() && e != name) candidates.insert(e);
  if (old.kind == coord::MEMBER_KIND_POD && !old.host.empty()) hosted_[old.host].erase(name);
  bool everyone = unenforced_.erase(name) > 0;
  for (auto& [policy_name, p] : policies_) {
    p.destinations.erase(name);
    p.exits.erase(name);
    if (p.sources.erase(name) > 0) {
      p.sources_stale = true;
      AddEnforcersOf(p.destinations, &candidates);
      AddEnforcersOf(p.exits, &candidates);
      everyone = everyone || !p.to_blocks.empty();
    }
  }
  members_.erase(it);
  if (auto c = compiled_.find(name); c != compiled_.end()) {
    for (const auto& [policy_name, count] : c->second.per_policy) {
      if (auto p = policies_.find(policy_name); p != policies_.end()) {
        p->second.compiled_rules -= count;
      }
    }
    compiled_.erase(c);
  }
  dirty_.erase(name);
  if (everyone) {
    for (std::string& e : AllEnforcers()) candidates.insert(std::move(e));
  }
  candidates.erase(name);
  Recompile(candidates);
}

void Engine::CandidatesOfPolicy(const PolicyState& policy, std::set<std::string>* out) const {
  AddEnforcersOf(policy.destinations, out);
  AddEnforcersOf(policy.exits, out);
  bool everyone = !policy.to_blocks.empty();
  for (const std::string& d : policy.destinations) everyone = everyone || unenforced_.count(d) > 0;
  if (everyone) {
    for (std::string& e : AllEnforcers()) out->insert(std::move(e));
  }
}

void Engine::Evaluate(PolicyState* policy, std::set<std::string>* candidates) {
  policy->sources.clear();
  policy->destinations.clear();
  policy->exits.clear();
  for (const auto& [name, m] : members_) {
    if (SideSelects(policy->spec.from, m)) policy->sources.insert(name);
    if (SideSelects(policy->spec.to, m)) policy->destinations.insert(name);
    if (InternetThrough(policy->spec.to, m)) policy->exits.insert(name);
  }
  policy->from_blocks = SideBlocks(policy->spec.from);
  policy->to_blocks = SideBlocks(policy->spec.to);
  policy->sources_stale = true;
  CandidatesOfPolicy(*policy, candidates);
}

void Engine::UpsertPolicy(const PeerPolicySpec& spec) {
  std::set<std::string> candidates;
  auto it = policies_.find(spec.name);
  if (it != policies_.end()) {
    if (it->second.spec == spec) return;
    CandidatesOfPolicy(it->second, &candidates);
  } else {
    it = policies_.emplace(spec.name, PolicyState{}).first;
  }
  it->second.spec = spec;
  Evaluate(&it->second, &candidates);
  Recompile(candidates);
}

void Engine::RemovePolicy(const std::string& name) {
  auto it = policies_.find(name);
  if (it == policies_.end()) return;
  std::set<std::string> candidates;
  CandidatesOfPolicy(it->second, &candidates);
  policies_.erase(it);
  Recompile(candidates);
}

void Engine::SetPolicies(const std::vector<PeerPolicySpec>& policies) {
  std::set<std::string> names;
  for (const PeerPolicySpec& p : policies) names.insert(p.name);
  std::vector<std::string> gone;
  for (const auto& [name, p] : policies_) {
    if (!names.count(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) RemovePolicy(name);
  for (const PeerPolicySpec& p : policies) UpsertPolicy(p);
}

void Engine::SetDefaultAction(coord::FilterAction action) {
  if (action == default_action_) return;
  default_action_ = action;
  std::vector<std::string> all = AllEnforcers();
  Recompile({all.begin(), all.end()});
}

void Engine::SetMeshRanges(const std::vector<Prefix>& ranges) {
  std::vector<Prefix> internet = InternetPrefixes(ranges);
  if (internet == internet_) return;
  internet_ = std::move(internet);
  std::set<std::string> exits;
  for (const auto& [name, policy] : policies_) AddEnforcersOf(policy.exits, &exits);
  Recompile(exits);
}

coord::FilterRules Engine::Compile(const std::string& enforcer,
                                   std::map<std::string, size_t>* counts,
                                   std::vector<Prefix>* exit_clients) {
  coord::FilterRules out;
  out.set_default_action(default_action_);
  const std::vector<Prefix> guarded = GuardedBy(enforcer);
  std::vector<std::string> filtered_for = {enforcer};
  if (auto pods = hosted_.find(enforcer); pods != hosted_.end()) {
    filtered_for.insert(filtered_for.end(), pods->second.begin(), pods->second.end());
  }
  std::vector<Prefix> unenforced_addresses;
  for (const std::string& name : unenforced_) {
    const Member& m = members_.at(name);
    unenforced_addresses.insert(unenforced_addresses.end(), m.addresses.begin(), m.addresses.end());
  }
  Normalize(&unenforced_addresses);
  for (const Prefix& p : unenforced_addresses) out.add_egress_prefixes(p.ToString());

  for (auto& [name, policy] : policies_) {
    const int before = out.rules_size();
    const uint32_t index = static_cast<uint32_t>(out.policies_size());
    // Inbound: to this member and the pods it hosts.
    std::vector<Prefix> destinations = Intersect(policy.to_blocks, guarded);
    for (const std::string& member : filtered_for) {
      if (!policy.destinations.count(member)) continue;
      const Member& m = members_.at(member);
      destinations.insert(destinations.end(), m.addresses.begin(), m.addresses.end());
    }
    Normalize(&destinations);
    const std::vector<Prefix>& sources = SourcesOf(&policy);
    // A side that selects nothing yields no rule (an empty list would mean "any").
    if (!destinations.empty() && !sources.empty()) {
      AddRules(policy.spec, index, sources, destinations, &out);
    }
    // Egress: from this member's addresses to members that cannot filter.
    if (!unenforced_.empty()) {
      std::vector<Prefix> egress = Intersect(policy.to_blocks, unenforced_addresses);
      for (const std::string& member : unenforced_) {
        if (!policy.destinations.count(member)) continue;
        const Member& m = members_.at(member);
        egress.insert(egress.end(), m.addresses.begin(), m.addresses.end());
      }
      Normalize(&egress);
      const std::vector<Prefix> own = Intersect(sources, guarded);
      if (!egress.empty() && !own.empty()) AddRules(policy.spec, index, own, egress, &out);
    }
    // Exit: from the policy's sources to the internet through this member.
    if (policy.exits.count(enforcer) && !internet_.empty() && !sources.empty()) {
      AddRules(policy.spec, index, sources, internet_, &out);
      if (!policy.spec.deny) {
        exit_clients->insert(exit_clients->end(), sources.begin(), sources.end());
      }
    }
    if (out.rules_size() > before) {
      out.add_policies(name);
      (*counts)[name] = static_cast<size_t>(out.rules_size() - before);
    }
  }
  return out;
}

void Engine::Recompile(const std::set<std::string>& candidates) {
  for (const std::string& name : candidates) {
    auto member = members_.find(name);
    auto old = compiled_.find(name);
    if (old != compiled_.end()) {
      for (const auto& [policy_name, count] : old->second.per_policy) {
        if (auto p = policies_.find(policy_name); p != policies_.end()) {
          p->second.compiled_rules -= count;
        }
      }
    }
    if (member == members_.end() || EnforcerOf(member->second) != name) {
      if (old != compiled_.end()) compiled_.erase(old);
      dirty_.erase(name);
      continue;
    }
    Compiled next;
    next.rules = Compile(name, &next.per_policy, &next.exit_clients);
    Normalize(&next.exit_clients);
    next.bytes = next.rules.SerializeAsString();
    ++counters_.recompiled;
    for (const auto& [policy_name, count] : next.per_policy) {
      policies_.at(policy_name).compiled_rules += count;
    }
    if (old == compiled_.end() || old->second.bytes != next.bytes) {
      ++counters_.changed;
      dirty_.insert(name);
    }
    compiled_[name] = std::move(next);
  }
}

std::map<std::string, coord::FilterRules> Engine::TakeDirty() {
  std::map<std::string, coord::FilterRules> out;
  for (const std::string& name : dirty_) {
    if (auto it = compiled_.find(name); it != compiled_.end()) out[name] = it->second.rules;
  }
  dirty_.clear();
  return out;
}

const coord::FilterRules* Engine::RulesFor(const std::string& member) const {
  auto it = compiled_.find(member);
  return it == compiled_.end() ? nullptr : &it->second.rules;
}

std::vector<Prefix> Engine::ExitClientsFor(const std::string& member) const {
  auto it = compiled_.find(member);
  return it == compiled_.end() ? std::vector<Prefix>() : it->second.exit_clients;
}

std::optional<PolicyStats> Engine::StatsFor(const std::string& policy) const {
  auto it = policies_.find(policy);
  if (it == policies_.end()) return std::nullopt;
  const PolicyState& p = it->second;
  return PolicyStats{p.sources.size(), p.destinations.size() + p.exits.size(),
                     !p.from_blocks.empty(), !p.to_blocks.empty(), p.compiled_rules};
}

const Member* Engine::FindMember(const std::string& name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second;
}

}  // namespace tunnelmesh::policy
