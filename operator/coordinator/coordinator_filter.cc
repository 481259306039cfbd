// The Coordinator's packet-filter part (declared in coordinator.h, split from coordinator.cc to
// keep each file readable): keeping one policy::Engine per mesh in line with the member map, the
// Mesh specs and the PeerPolicies; sending changed rule sets to the members they belong to; and
// the Explain RPC's evaluation. Everything here runs under mu_ and does no I/O.
#include <cstring>
#include <string>

#include "lib/base/log.h"
#include "operator/coordinator/coordinator.h"
#include "operator/policy/compiler.h"

namespace tunnelmesh {
namespace {

constexpr size_t kMaxExplainText = 253;

coord::FilterAction DefaultActionOf(const MeshSpec& spec) {
  return spec.default_action == "Allow" ? coord::FILTER_ACTION_ALLOW : coord::FILTER_ACTION_DENY;
}

// An address of `member` in `family` (IPv4 when `family` is null and it has one).
std::optional<IpAddress> AddressOf(const policy::Member& member, const IpAddress* family) {
  std::optional<IpAddress> fallback;
  for (const Prefix& p : member.addresses) {
    if (p.length() != p.address().bit_length()) continue;
    if (family != nullptr ? p.address().is_v4() == family->is_v4() : p.address().is_v4()) {
      return p.address();
    }
    if (!fallback) fallback = p.address();
  }
  return family == nullptr ? fallback : std::nullopt;
}

// The member one of whose prefixes holds `ip` (the longest one wins).
const policy::Member* MemberHolding(const policy::Engine& engine, const IpAddress& ip) {
  const policy::Member* best = nullptr;
  int best_length = -1;
  for (const auto& [name, m] : engine.members()) {
    for (const Prefix& p : m.addresses) {
      if (p.address().is_v4() == ip.is_v4() && p.Contains(ip) && p.length() > best_length) {
        best = &m;
        best_length = p.length();
      }
    }
  }
  return best;
}

// One side of an Explain request: a member name or an address.
struct FlowEnd {
  std::optional<IpAddress> ip;
  const policy::Member* member = nullptr;
};

absl::StatusOr<FlowEnd> Resolve(const policy::Engine& engine, const std::string& text,
                                const std::string& what, const std::string& mesh) {
  if (text.empty() || text.size() > kMaxExplainText) {
    return absl::InvalidArgumentError(what + " must be a member name or a mesh IP");
  }
  FlowEnd e;
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) {
    e.ip = *ip;
    e.member = MemberHolding(engine, *ip);
    return e;
  }
  e.member = engine.FindMember(text);
  if (e.member == nullptr) {
    return absl::NotFoundError(what + " \"" + text +
                               "\" is neither an IP address nor a member of " + "Mesh \"" + mesh +
                               "\" (tunnelmesh-agent status lists them)");
  }
  return e;
}

// Whether `ip` is outside the mesh's ranges (the internet of PeerPolicy `internet` entries).
bool IsInternet(const MeshSpec& spec, const IpAddress& ip) {
  if (spec.ipv4_cidr.Contains(ip)) return false;
  return !(spec.ipv6_cidr && spec.ipv6_cidr->Contains(ip));
}

// What `enforcer`'s rule set decides for the flow.
absl::StatusOr<coord::ExplainResponse> Decide(const policy::Engine& engine,
                                              const std::string& enforcer, const IpAddress& source,
                                              const IpAddress& destination,
                                              const coord::ExplainRequest& request) {
  const coord::FilterRules* rules = engine.RulesFor(enforcer);
  if (rules == nullptr) {
    return absl::FailedPreconditionError("member \"" + enforcer +
                                         "\", which filters this traffic, is not in the mesh");
  }
  if (request.port() > 65535) return absl::InvalidArgumentError("port must be at most 65535");
  const policy::Decision decision = policy::Evaluate(
      *rules, source, destination, request.protocol(), static_cast<uint16_t>(request.port()));
  coord::ExplainResponse response;
  response.set_action(decision.action);
  response.set_policy(decision.policy);
  response.set_enforced_by(enforcer);
  response.set_source_ip(source.ToString());
  response.set_destination_ip(destination.ToString());
  return response;
}

}  // namespace

policy::Member Coordinator::PolicyMemberLocked(const MemberRecord& record) const {
  policy::Member m;
  m.name = record.name;
  m.kind = record.kind;
  m.labels = record.labels;
  for (const IpAddress& ip : record.mesh_ips) m.addresses.emplace_back(ip, ip.bit_length());
  // A member an admin gave static endpoints is a plain WireGuard peer: it runs no agent.
  m.runs_agent = record.static_endpoints.empty();
  // Only a member with an agent can forward for others.
  m.exit = record.exit_peer && m.runs_agent && !record.pod;
  if (record.pod) {
    // Its host filters for it; a pod runs no agent of its own.
    m.runs_agent = false;
    m.namespace_name = record.pod->namespace_name;
    m.namespace_labels = record.pod->namespace_labels;
    if (m.namespace_labels.empty())
      m.namespace_labels[policy::kNamespaceNameLabel] = m.namespace_name;
    if (auto host = members_.find(record.pod->host); host != members_.end()) {
      m.host = host->second.name;
    }
  }
  return m;
}

std::vector<PeerPolicySpec> Coordinator::PoliciesOf(const std::string& mesh) const {
  std::vector<PeerPolicySpec> out;
  for (const PeerPolicySpec& p : policies_) {
    if (p.mesh == mesh) out.push_back(p);
  }
  return out;
}

void Coordinator::SyncFilterLocked(const MemberRecord* old, const MemberRecord* now) {
  if (old != nullptr && (now == nullptr || old->name != now->name || old->mesh != now->mesh)) {
    if (auto e = engines_.find(old->mesh); e != engines_.end()) e->second.RemoveMember(old->name);
  }
  if (now != nullptr) {
    if (auto e = engines_.find(now->mesh); e != engines_.end()) {
      e->second.UpsertMember(PolicyMemberLocked(*now));
      // Its pods name it as their host (a rename reaches them).
      if (auto pods = pods_by_host_.find(now->public_key); pods != pods_by_host_.end()) {
        for (const PublicKey& pod : pods->second) {
          if (auto it = members_.find(pod); it != members_.end()) {
            e->second.UpsertMember(PolicyMemberLocked(it->second));
          }
        }
      }
    }
  }
}

void Coordinator::SyncEnginesLocked() {
  for (auto it = engines_.begin(); it != engines_.end();) {
    it = meshes_.count(it->first) ? std::next(it) : engines_.erase(it);
  }
  for (const auto& [name, mesh] : meshes_) {
    const coord::FilterAction action = DefaultActionOf(mesh.spec);
    auto engine = engines_.find(name);
    std::vector<Prefix> ranges = {mesh.spec.ipv4_cidr};
    if (mesh.spec.ipv6_cidr) ranges.push_back(*mesh.spec.ipv6_cidr);
    if (engine == engines_.end()) {
      engine = engines_.emplace(name, policy::Engine(action)).first;
      engine->second.SetMeshRanges(ranges);
      for (const auto& [key, record] : members_) {
        if (record.mesh == name) engine->second.UpsertMember(PolicyMemberLocked(record));
      }
      engine->second.SetPolicies(PoliciesOf(name));
    } else {
      engine->second.SetDefaultAction(action);
      engine->second.SetMeshRanges(ranges);
    }
    // Every watcher of a new or changed mesh gets a full map (SetMeshes), which carries its rule
    // set: nothing to send separately.
    (void)engine->second.TakeDirty();
  }
}

void Coordinator::SendFiltersLocked() {
  for (auto& [mesh, engine] : engines_) {
    std::map<std::string, coord::FilterRules> dirty = engine.TakeDirty();
    if (dirty.empty()) continue;
    ++version_;
    for (auto& [key, live] : live_) {
      auto record = members_.find(key);
      if (record == members_.end() || record->second.mesh != mesh) continue;
      auto rules = dirty.find(record->second.name);
      if (rules == dirty.end()) continue;
      std::shared_ptr<Subscription> sub = live.subscription.lock();
      if (!sub) continue;
      coord::MapUpdate update;
      *update.mutable_filter() = std::move(rules->second);
      update.set_version(version_);
      PushLocked(sub, std::move(update));
      counters_.filter_updates_sent.fetch_add(1, std::memory_order_relaxed);
    }
  }
  uint64_t recompiled = 0;
  for (const auto& [mesh, engine] : engines_) recompiled += engine.counters().recompiled;
  counters_.filter_recompiles.store(recompiled, std::memory_order_relaxed);
  SendExitConfigsLocked();
}

coord::FilterRules Coordinator::FilterFor(const MemberRecord& record, const MeshState& mesh) const {
  if (auto engine = engines_.find(mesh.spec.name); engine != engines_.end()) {
    if (const coord::FilterRules* rules = engine->second.RulesFor(record.name)) return *rules;
  }
  coord::FilterRules rules;
  rules.set_default_action(DefaultActionOf(mesh.spec));
  return rules;
}

std::optional<policy::PolicyStats> Coordinator::PolicyStatsFor(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const PeerPolicySpec& p : policies_) {
    if (p.name != name) continue;
    auto engine = engines_.find(p.mesh);
    if (engine != engines_.end()) return engine->second.StatsFor(name);
  }
  return std::nullopt;
}

std::optional<coord::FilterRules> Coordinator::FilterRulesFor(const PublicKey& member) const {
  absl::ReaderMutexLock lock(&mu_);
  auto record = members_.find(member);
  if (record == members_.end()) return std::nullopt;
  auto engine = engines_.find(record->second.mesh);
  if (engine == engines_.end()) return std::nullopt;
  const coord::FilterRules* rules = engine->second.RulesFor(record->second.name);
  if (rules == nullptr) return std::nullopt;
  return *rules;
}

absl::StatusOr<coord::ExplainResponse> Coordinator::Explain(const PublicKey& caller,
                                                            const coord::ExplainRequest& request) {
  counters_.explain_requests.fetch_add(1, std::memory_order_relaxed);
  absl::ReaderMutexLock lock(&mu_);
  auto record = members_.find(caller);
  if (record == members_.end()) return absl::NotFoundError("not a member: register");
  const std::string& mesh = record->second.mesh;
  auto engine_it = engines_.find(mesh);
  if (engine_it == engines_.end()) {
    return absl::FailedPreconditionError("the member's Mesh \"" + mesh + "\" no longer exists");
  }
  const policy::Engine& engine = engine_it->second;
  absl::StatusOr<FlowEnd> source = Resolve(engine, request.source(), "source", mesh);
  if (!source.ok()) return source.status();
  absl::StatusOr<FlowEnd> destination = Resolve(engine, request.destination(), "destination", mesh);
  if (!destination.ok()) return destination.status();
  // The internet: the source's exit peer enforces, the first one it may use.
  auto mesh_state = meshes_.find(mesh);
  if (destination->member == nullptr && destination->ip && source->member != nullptr &&
      mesh_state != meshes_.end() && IsInternet(mesh_state->second.spec, *destination->ip)) {
    const MemberRecord* client = nullptr;
    for (const auto& [key, m] : members_) {
      if (m.mesh == mesh && m.name == source->member->name) client = &m;
    }
    const coord::ExitConfig exits =
        client == nullptr ? coord::ExitConfig() : ExitConfigLocked(*client);
    if (exits.use_public_keys().empty()) {
      return absl::FailedPreconditionError(
          "destination " + request.destination() + " is outside the mesh, and \"" +
          source->member->name +
          "\" uses no exit peer it may use (MeshPeer spec.useExitPeer, join --exit-peer; its "
          "`tunnelmesh-agent status` says why one is refused)");
    }
    PublicKey exit_key;
    std::memcpy(exit_key.bytes.data(), exits.use_public_keys(0).data(), kKeySize);
    destination->member = engine.FindMember(members_.at(exit_key).name);
    if (!source->ip) source->ip = AddressOf(*source->member, &*destination->ip);
    if (destination->member == nullptr || !source->ip) {
      return absl::FailedPreconditionError("source \"" + request.source() +
                                           "\" has no address of the destination's IP family");
    }
    return Decide(engine, destination->member->name, *source->ip, *destination->ip, request);
  }
  if (destination->member == nullptr) {
    return absl::NotFoundError("destination " + request.destination() +
                               " is no address of a member of Mesh \"" + mesh +
                               "\": no member's filter decides traffic to it");
  }
  // Pick addresses of one family: an address given wins, else IPv4 when both have one.
  if (!source->ip && !destination->ip) {
    source->ip = AddressOf(*source->member, nullptr);
    if (source->ip) destination->ip = AddressOf(*destination->member, &*source->ip);
    if (!destination->ip) {
      destination->ip = AddressOf(*destination->member, nullptr);
      source->ip = destination->ip ? AddressOf(*source->member, &*destination->ip) : std::nullopt;
    }
  } else if (!source->ip) {
    source->ip = AddressOf(*source->member, &*destination->ip);
  } else if (!destination->ip) {
    destination->ip = AddressOf(*destination->member, &*source->ip);
  }
  if (!source->ip || !destination->ip) {
    return absl::FailedPreconditionError("source \"" + request.source() + "\" and destination \"" +
                                         request.destination() +
                                         "\" have no addresses of the same IP family");
  }
  // The destination filters for itself (or its host for a pod); a member without an agent does
  // not, and its sender checks instead.
  std::string enforcer = policy::EnforcerOf(*destination->member);
  if (enforcer.empty() && source->member != nullptr) enforcer = policy::EnforcerOf(*source->member);
  if (enforcer.empty()) {
    return absl::FailedPreconditionError("neither \"" + request.destination() + "\" nor \"" +
                                         request.source() +
                                         "\" runs an agent: no member's filter sees this traffic");
  }
  return Decide(engine, enforcer, *source->ip, *destination->ip, request);
}

}  // namespace tunnelmesh
