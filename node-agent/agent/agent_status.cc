#include "node-agent/agent/agent_status.h"

namespace tunnelmesh {

std::string BuildAgentStatusJson(const SelfInfo& self, const noise::Device& device,
                                 const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                 const PathManager* paths, bool coordinated,
                                 uint64_t control_posts_dropped, nlohmann::json filter) {
  PeerDescriptions descriptions;
  if (coordinated) {
    for (const auto& [key, info] : peers.peers()) {
      PeerDescription& d = descriptions[key];
      d.name = info.name;
      d.dns_name = info.dns_name;
      d.mesh_ips = info.mesh_ips;
      if (paths != nullptr && paths->HasPeer(key)) {
        const disco::PathKind kind = paths->PathOf(key).kind;
        d.path = disco::PathKindName(kind);
        d.via_relay = kind == disco::PathKind::kRelay;
      }
    }
  }
  nlohmann::json status = BuildStatus(self, device, *peers.routes(), plane_drops, descriptions);
  status["control_loop"] = {{"posts_dropped", control_posts_dropped}};
  if (!filter.is_null()) status["filter"] = std::move(filter);
  return status.dump();
}

}  // namespace tunnelmesh
