// The agent's status report: built from the live Device and routes as JSON (the schema `status
// --json` prints, see docs/configuration.md) and rendered for people in the style of `wg show`.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "lib/noise/device.h"
#include "nlohmann/json.hpp"
#include "node-agent/dataplane/dataplane.h"

namespace tunnelmesh {

struct SelfInfo {
  std::string name;
  std::string interface_name;
  PublicKey public_key;
  std::vector<IpAddress> mesh_ips;
  uint16_t listen_port = 0;
};

// Lets the caller add or override a peer's fields (its name, its path) in the report.
using PeerDescriber = std::function<void(const noise::Peer& peer, nlohmann::json& fields)>;

// Thread-safe: reads counters and takes each peer's lock briefly. "drops" holds the protocol's
// drops, its cookie_sent outcome and the data plane's drops (`plane_drops`), in one object.
nlohmann::json BuildStatus(const SelfInfo& self, const noise::Device& device,
                           const RouteTable& routes, const DataplaneDropCounts& plane_drops,
                           const PeerDescriber& describe = nullptr);

// `wg show`-like text; `now` renders "latest handshake: 5 seconds ago".
std::string FormatStatus(const nlohmann::json& status, absl::Time now);

}  // namespace tunnelmesh
