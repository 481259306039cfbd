// The agent's status report: built from the live Device and routes as JSON (the schema `status
// --json` prints, see docs/configuration.md) and rendered for people in the style of `wg show`.
#pragma once

#include <map>
#include <optional>
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

// What the agent knows of a peer beyond the device: copied out of the control thread's state
// before the report is built, so building it never calls back into agent state while the device's
// peer lock is held.
struct PeerDescription {
  std::string name;
  std::string dns_name;
  std::vector<std::string> mesh_ips;
  std::optional<std::string> path;       // "direct", "relay" or "none"; unset: "direct".
  bool via_relay = false;                // The endpoint field then says "relay".
  std::optional<double> rtt_ms;          // Direct path: the last discovery ping's round trip.
  std::optional<uint64_t> path_changes;  // Paths applied after the first (join only).
};
using PeerDescriptions = std::map<PublicKey, PeerDescription>;

// Thread-safe: reads counters and takes each peer's lock briefly. "drops" holds the protocol's
// drops, its cookie_sent outcome and the data plane's drops (`plane_drops`), in one object. Peers
// in `descriptions` get its name, dns_name, mesh_ips and path instead of the defaults.
nlohmann::json BuildStatus(const SelfInfo& self, const noise::Device& device,
                           const RouteTable& routes, const DataplaneDropCounts& plane_drops,
                           const PeerDescriptions& descriptions = {});

// `wg show`-like text; `now` renders "latest handshake: 5 seconds ago".
std::string FormatStatus(const nlohmann::json& status, absl::Time now);

// What `status --check` fails on, in words: no mesh address yet, or not connected to the
// coordinator (a member outside a mesh, run from a config file, has no coordinator and passes).
// Offline peers are not problems: laptops come and go.
std::vector<std::string> StatusProblems(const nlohmann::json& status);

}  // namespace tunnelmesh
