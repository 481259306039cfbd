// The agent's `status` report from its control-thread state: copies each peer's name, DNS name,
// mesh IPs and path out of the PeerTable and PathManager first, then walks the device
// (control/status.h's BuildStatus) with only those copies, so no agent state is touched while the
// device's peer lock is held (the lock-order inversion of the old JoinAgent::Status).
//
// Threads: call on the control thread that owns `peers` and `paths`.
#pragma once

#include <cstdint>
#include <string>

#include "lib/noise/device.h"
#include "node-agent/control/status.h"
#include "node-agent/nat/path_manager.h"
#include "node-agent/peer/peer_table.h"

namespace tunnelmesh {

// `coordinated`: peers come from a coordinator's map (names and paths are shown); otherwise from a
// config file (keys and "direct"). `paths` may be null. `plane_drops`: the data plane's drops.
// `control_posts_dropped`: posts the control loop refused because its queue was full
// (ControlLoop::dropped()), reported as control_loop.posts_dropped.
// `filter`: the report's "filter" object (node-agent/policy/filter_status.h); null leaves it out.
std::string BuildAgentStatusJson(const SelfInfo& self, const noise::Device& device,
                                 const DataplaneDropCounts& plane_drops, const PeerTable& peers,
                                 const PathManager* paths, bool coordinated,
                                 uint64_t control_posts_dropped, nlohmann::json filter = nullptr);

}  // namespace tunnelmesh
