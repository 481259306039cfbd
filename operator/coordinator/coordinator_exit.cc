// The Coordinator's exit-peer part (declared in coordinator.h; docs/remote-access.md): which exits
// each member may use, in its own order of preference, and whom each exit forwards for. The
// policy engine compiles `internet` destinations into the exits' rule sets and collects their
// clients (policy::Engine::ExitClientsFor); this file only reads that. Everything here runs under
// mu_ and does no I/O.
#include <string>

#include "operator/coordinator/coordinator.h"
#include "operator/policy/compiler.h"

namespace tunnelmesh {
namespace {

// Whether one of `ips` is inside one of `prefixes`.
bool Covered(const std::vector<IpAddress>& ips, const std::vector<Prefix>& prefixes) {
  for (const IpAddress& ip : ips) {
    for (const Prefix& p : prefixes) {
      if (p.address().is_v4() == ip.is_v4() && p.Contains(ip)) return true;
    }
  }
  return false;
}

void Refuse(coord::ExitConfig* config, const std::string& name, const std::string& reason) {
  coord::ExitRefusal* refusal = config->add_refused();
  refusal->set_name(name);
  refusal->set_reason(reason);
}

}  // namespace

coord::ExitConfig Coordinator::ExitConfigLocked(const MemberRecord& record) const {
  coord::ExitConfig config;
  auto engine = engines_.find(record.mesh);
  if (engine == engines_.end() || record.pod) return config;
  for (const std::string& name : record.use_exit_peers) {
    const MemberRecord* exit = nullptr;
    for (const auto& [key, m] : members_) {
      if (m.mesh == record.mesh && m.name == name) exit = &m;
    }
    if (exit == nullptr) {
      Refuse(&config, name, "no member of Mesh \"" + record.mesh + "\" has this name");
    } else if (exit->public_key == record.public_key) {
      Refuse(&config, name, "a member cannot be its own exit peer");
    } else if (!exit->exit_peer || !exit->static_endpoints.empty()) {
      Refuse(&config, name,
             "does not offer itself as an exit peer (MeshPeer spec.exitPeer, join "
             "--advertise-exit)");
    } else if (!Covered(record.mesh_ips, engine->second.ExitClientsFor(exit->name))) {
      Refuse(&config, name,
             "no PeerPolicy allows this member the internet through it (an Allow policy with "
             "`to: [{internet: {}}]` whose `from` selects this member)");
    } else {
      config.add_use_public_keys(
          std::string(reinterpret_cast<const char*>(exit->public_key.bytes.data()), kKeySize));
    }
  }
  if (record.exit_peer) {
    for (const Prefix& p : engine->second.ExitClientsFor(record.name)) {
      config.add_client_prefixes(p.ToString());
    }
  }
  return config;
}

void Coordinator::NoteExitSentLocked(const PublicKey& member, const coord::ExitConfig& config) {
  std::string bytes = config.SerializeAsString();
  if (bytes.empty()) {
    exit_configs_.erase(member);
  } else {
    exit_configs_[member] = std::move(bytes);
  }
}

void Coordinator::SendExitConfigsLocked() {
  // Members that are gone.
  for (auto it = exit_configs_.begin(); it != exit_configs_.end();) {
    it = members_.count(it->first) ? std::next(it) : exit_configs_.erase(it);
  }
  std::vector<std::pair<PublicKey, coord::ExitConfig>> changed;
  for (const auto& [key, record] : members_) {
    auto last = exit_configs_.find(key);
    // Uses and offers no exit, and its last config was empty: it still is.
    if (record.use_exit_peers.empty() && !record.exit_peer && last == exit_configs_.end()) continue;
    coord::ExitConfig config = ExitConfigLocked(record);
    const std::string bytes = config.SerializeAsString();
    if ((last == exit_configs_.end() ? std::string() : last->second) == bytes) continue;
    changed.emplace_back(key, std::move(config));
  }
  if (changed.empty()) return;
  ++version_;
  for (auto& [key, config] : changed) {
    NoteExitSentLocked(key, config);
    auto live = live_.find(key);
    if (live == live_.end()) continue;
    std::shared_ptr<Subscription> sub = live->second.subscription.lock();
    if (!sub) continue;
    coord::MapUpdate update;
    *update.mutable_exit() = std::move(config);
    update.set_version(version_);
    PushLocked(sub, std::move(update));
  }
}

}  // namespace tunnelmesh
