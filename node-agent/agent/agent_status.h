// The agent's `status` report from its control-thread state: copies each peer's name, DNS name,
// mesh IPs and path out of the PeerTable and PathManager first, then walks the device
// (control/status.h's BuildStatus) with only those copies, so no agent state is touched while the
// device's peer lock is held (the lock-order inversion of the old JoinAgent::Status).
//
// Threads: call on the control thread that owns `peers` and `paths`.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "lib/noise/device.h"
#include "node-agent/control/status.h"
#include "node-agent/nat/path_manager.h"
#include "node-agent/peer/peer_liveness.h"
#include "node-agent/peer/peer_table.h"

namespace tunnelmesh {

// What `status` says of this agent's own connections beyond the device (join; config mode leaves
// `coordinator` empty), and each peer's liveness.
struct AgentHealth {
  std::string mesh;
  std::string coordinator;  // host:port as dialed; empty in config mode.
  bool coordinator_connected = false;
  absl::Time coordinator_changed = absl::InfinitePast();  // When it last went up or down.
  std::string coordinator_error;                          // Why it went down.
  bool has_relay = false;
  bool relay_connected = false;
  const PeerLiveness* liveness = nullptr;
  absl::Time now = absl::InfinitePast();
};

// `coordinated`: peers come from a coordinator's map (names and paths are shown); otherwise from a
// config file (keys and "direct"). `paths` may be null. `plane_drops`: the data plane's drops.
// `control_posts_dropped`: posts the control loop refused because its queue was full
// (ControlLoop::dropped()), reported as control_loop.posts_dropped.
// `filter`: the report's "filter" object (node-agent/policy/filter_status.h); null leaves it out.
// `health`: self's mesh, coordinator and relay state and warnings, and each peer's online,
// last_seen, handshake_failures and warnings (docs/configuration.md, "status"). Peers on a path
// the PathManager follows also get path_changes, and rtt_ms while the path is direct or ssh.
nlohmann::json BuildAgentStatus(const SelfInfo& self, const noise::Device& device,
                                const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                const PathManager* paths, bool coordinated,
                                uint64_t control_posts_dropped, const AgentHealth& health,
                                nlohmann::json filter = nullptr);
// BuildAgentStatus, as text.
std::string BuildAgentStatusJson(const SelfInfo& self, const noise::Device& device,
                                 const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                 const PathManager* paths, bool coordinated,
                                 uint64_t control_posts_dropped, const AgentHealth& health,
                                 nlohmann::json filter = nullptr);

}  // namespace tunnelmesh
