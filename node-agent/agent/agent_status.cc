#include "node-agent/agent/agent_status.h"

namespace tunnelmesh {
namespace {

int64_t UnixSecondsOrZero(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixSeconds(t);
}

// Adds self's mesh, coordinator, relay and warnings, and each peer's liveness.
void AddHealth(const AgentHealth& health, nlohmann::json* status) {
  nlohmann::json& self = (*status)["self"];
  nlohmann::json warnings = nlohmann::json::array();
  if (!health.coordinator.empty()) {
    self["mesh"] = health.mesh;
    self["coordinator"] = {{"address", health.coordinator},
                           {"connected", health.coordinator_connected},
                           {"since", UnixSecondsOrZero(health.coordinator_changed)}};
    if (!health.coordinator_connected) {
      self["coordinator"]["error"] = health.coordinator_error;
      warnings.push_back(
          "not connected to the coordinator at " + health.coordinator +
          (health.coordinator_error.empty() ? std::string()
                                            : " (" + health.coordinator_error + ")") +
          ": tunnels keep working, but new members, policy changes and the peers' online state "
          "shown here wait until it is back");
    }
    self["relay"] =
        health.has_relay ? (health.relay_connected ? "connected" : "disconnected") : "none";
    if (health.has_relay && !health.relay_connected) {
      warnings.push_back("not connected to the relay: peers without a direct path are unreachable");
    }
  }
  nlohmann::json& peers = (*status)["peers"];
  for (nlohmann::json& peer : peers) {
    const std::string text = peer.value("public_key", std::string());
    absl::StatusOr<PublicKey> key = PublicKey::FromBase64(text);
    if (health.liveness == nullptr || !key.ok()) continue;
    const PeerLivenessView view = health.liveness->View(*key, health.now);
    peer["online"] = view.online;
    peer["last_seen"] = UnixSecondsOrZero(view.last_seen);
    peer["handshake_failures"] = view.handshake_failures;
    peer["warnings"] = view.warnings;
    for (const std::string& w : view.warnings) {
      warnings.push_back("peer " + peer.value("name", text) + ": " + w);
    }
  }
  self["warnings"] = std::move(warnings);
}

}  // namespace

nlohmann::json BuildAgentStatus(const SelfInfo& self, const noise::Device& device,
                                const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                const PathManager* paths, bool coordinated,
                                uint64_t control_posts_dropped, const AgentHealth& health,
                                nlohmann::json filter) {
  PeerDescriptions descriptions;
  if (coordinated) {
    for (const auto& [key, info] : peers.peers()) {
      PeerDescription& d = descriptions[key];
      d.name = info.name;
      d.dns_name = info.dns_name;
      d.mesh_ips = info.mesh_ips;
      if (paths != nullptr && paths->HasPeer(key)) {
        const PathStats stats = paths->StatsOf(key);
        const disco::PathKind kind = stats.path.kind;
        d.path = disco::PathKindName(kind);
        d.via_relay = kind == disco::PathKind::kRelay;
        d.path_changes = stats.changes;
        if (stats.rtt && (kind == disco::PathKind::kDirect || kind == disco::PathKind::kSsh)) {
          // Microsecond precision is all a ping through two schedulers can give.
          d.rtt_ms =
              std::chrono::duration_cast<std::chrono::microseconds>(*stats.rtt).count() / 1000.0;
        }
      }
    }
  }
  nlohmann::json status = BuildStatus(self, device, *peers.routes(), plane_drops, descriptions);
  AddHealth(health, &status);
  status["control_loop"] = {{"posts_dropped", control_posts_dropped}};
  if (!filter.is_null()) status["filter"] = std::move(filter);
  return status;
}

std::string BuildAgentStatusJson(const SelfInfo& self, const noise::Device& device,
                                 const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                 const PathManager* paths, bool coordinated,
                                 uint64_t control_posts_dropped, const AgentHealth& health,
                                 nlohmann::json filter) {
  return BuildAgentStatus(self, device, plane_drops, peers, paths, coordinated,
                          control_posts_dropped, health, std::move(filter))
      .dump();
}

}  // namespace tunnelmesh
