#include "node-agent/control/status.h"

#include <cstdint>
#include <cstdio>

#include "node-agent/policy/filter_status.h"

namespace tunnelmesh {
namespace {

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), unit == 0 ? "%.0f %s" : "%.2f %s", value, kUnits[unit]);
  return buf;
}

// Checked reads of the status JSON (FormatStatus): a missing key, a non-object parent or a value
// of another type reads as null, "" or 0 instead of throwing.
const nlohmann::json& Field(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string String(const nlohmann::json& object, const char* key) {
  const nlohmann::json& value = Field(object, key);
  return value.is_string() ? value.get<std::string>() : std::string();
}

uint64_t AsUnsigned(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() > 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return 0;  // Negative, fractional or not a number.
}

uint64_t Unsigned(const nlohmann::json& object, const char* key) {
  return AsUnsigned(Field(object, key));
}

// The strings of `array`, comma separated; other elements are skipped.
std::string JoinStrings(const nlohmann::json& array) {
  std::string out;
  if (!array.is_array()) return out;
  for (const nlohmann::json& item : array) {
    if (item.is_string()) out += (out.empty() ? "" : ", ") + item.get<std::string>();
  }
  return out;
}

// "1 h, 2 min, 5 s" since `unix_seconds` (0 for a time in the future).
std::string Since(uint64_t unix_seconds, absl::Time now) {
  const int64_t now_seconds = absl::ToUnixSeconds(now);
  // A time in the future (clock skew, or a malformed reply) reads as now.
  const int64_t seconds = now_seconds <= 0 || unix_seconds >= static_cast<uint64_t>(now_seconds)
                              ? 0
                              : now_seconds - static_cast<int64_t>(unix_seconds);
  std::string out;
  if (seconds >= 3600) out += std::to_string(seconds / 3600) + " h, ";
  if (seconds >= 60) out += std::to_string(seconds / 60 % 60) + " min, ";
  return out + std::to_string(seconds % 60) + " s";
}

std::string Ago(uint64_t unix_seconds, absl::Time now) {
  if (unix_seconds == 0) return "never";
  return Since(unix_seconds, now) + " ago";
}

}  // namespace

nlohmann::json BuildStatus(const SelfInfo& self, const noise::Device& device,
                           const RouteTable& routes, const DataplaneDropCounts& plane_drops,
                           const PeerDescriptions& descriptions) {
  nlohmann::json out;
  nlohmann::json mesh_ips = nlohmann::json::array();
  for (const IpAddress& ip : self.mesh_ips) mesh_ips.push_back(ip.ToString());
  out["self"] = {{"name", self.name},
                 {"interface", self.interface_name},
                 {"public_key", self.public_key.ToBase64()},
                 {"mesh_ips", mesh_ips},
                 {"listen_port", self.listen_port}};
  nlohmann::json peers = nlohmann::json::array();
  device.ForEachPeer([&](noise::Peer& peer) {
    nlohmann::json allowed = nlohmann::json::array();
    nlohmann::json peer_ips = nlohmann::json::array();
    for (const Prefix& prefix : routes.PrefixesOf(&peer)) {
      allowed.push_back(prefix.ToString());
      if (prefix.length() == prefix.address().bit_length()) {
        peer_ips.push_back(prefix.address().ToString());
      }
    }
    std::optional<TransportEndpoint> endpoint = peer.endpoint();
    const noise::PeerStats& stats = peer.stats();
    nlohmann::json fields = {
        {"name", peer.public_key().Short()},
        {"public_key", peer.public_key().ToBase64()},
        {"mesh_ips", peer_ips},
        {"allowed_ips", allowed},
        {"endpoint", endpoint ? endpoint->ToString() : ""},
        {"path", "direct"},
        {"latest_handshake", stats.last_handshake_unix_nanos.load() / 1'000'000'000},
        {"rx_bytes", stats.rx_bytes.load()},
        {"tx_bytes", stats.tx_bytes.load()},
        {"rx_packets", stats.rx_packets.load()},
        {"tx_packets", stats.tx_packets.load()},
        {"handshakes", stats.handshakes_completed.load()},
        {"handshakes_initiated", stats.handshakes_initiated.load()},
        {"persistent_keepalive", peer.persistent_keepalive().count()},
    };
    if (auto it = descriptions.find(peer.public_key()); it != descriptions.end()) {
      const PeerDescription& d = it->second;
      fields["name"] = d.name;
      fields["mesh_ips"] = d.mesh_ips;
      fields["dns_name"] = d.dns_name;
      if (d.path) fields["path"] = *d.path;
      if (d.via_relay) fields["endpoint"] = "relay";
      if (d.rtt_ms) fields["rtt_ms"] = *d.rtt_ms;
      if (d.path_changes) fields["path_changes"] = *d.path_changes;
    }
    peers.push_back(std::move(fields));
  });
  out["peers"] = peers;
  nlohmann::json drops = nlohmann::json::object();
  for (size_t i = 0; i < static_cast<size_t>(noise::Drop::kCount); ++i) {
    auto d = static_cast<noise::Drop>(i);
    drops[noise::DropName(d)] = device.drops().Get(d);
  }
  for (size_t i = 0; i < static_cast<size_t>(noise::Outcome::kCount); ++i) {
    auto o = static_cast<noise::Outcome>(i);
    drops[noise::OutcomeName(o)] = device.outcomes().Get(o);
  }
  for (size_t i = 0; i < static_cast<size_t>(DataplaneDrop::kCount); ++i) {
    auto d = static_cast<DataplaneDrop>(i);
    drops[DataplaneDropName(d)] = plane_drops.Get(d);
  }
  out["drops"] = drops;
  return out;
}

namespace {

// The "exit" object (node-agent/exit/exit_controller.h): empty when this member neither uses nor
// serves an exit peer.
std::string FormatExitStatus(const nlohmann::json& exit) {
  if (!exit.is_object()) return "";
  const nlohmann::json& peers = Field(exit, "peers");
  const nlohmann::json& refused = Field(exit, "refused");
  const nlohmann::json& serving = Field(exit, "serving");
  const std::string state = String(exit, "state");
  auto none = [](const nlohmann::json& a) { return !a.is_array() || a.empty(); };
  if (state == "none" && none(refused) && none(serving)) return "";
  std::string out = "\nexit: " + state + "\n";
  if (peers.is_array()) {
    for (const nlohmann::json& peer : peers) {
      out += "  " + String(peer, "name") + ": " +
             (Field(peer, "healthy") == true ? std::string("healthy")
                                             : "not healthy (" + String(peer, "reason") + ")") +
             (Field(peer, "active") == true ? ", in use" : "") + "\n";
    }
  }
  if (refused.is_array()) {
    for (const nlohmann::json& r : refused) {
      out += "  " + String(r, "name") + ": refused (" + String(r, "reason") + ")\n";
    }
  }
  if (!none(serving)) {
    out += "  exit for: " + JoinStrings(serving) + "\n";
  }
  const std::string error = String(exit, "error");
  if (!error.empty()) out += "  error: " + error + "\n";
  return out;
}

}  // namespace

std::string FormatStatus(const nlohmann::json& status, absl::Time now) {
  // The reply comes from another process: every field is checked (a missing or mistyped one reads
  // as empty or zero), so a malformed reply prints what it can and never throws.
  std::string out;
  const nlohmann::json& self = Field(status, "self");
  const std::string interface_name = String(self, "interface");
  out += "interface: " + interface_name + "\n";
  const std::string self_name = String(self, "name");
  if (!self_name.empty() && self_name != interface_name) out += "  name: " + self_name + "\n";
  out += "  public key: " + String(self, "public_key") + "\n";
  out += "  listening port: " + std::to_string(Unsigned(self, "listen_port")) + "\n";
  const std::string ips = JoinStrings(Field(self, "mesh_ips"));
  if (!ips.empty()) out += "  addresses: " + ips + "\n";
  const std::string mesh = String(self, "mesh");
  if (!mesh.empty()) out += "  mesh: " + mesh + "\n";
  const nlohmann::json& coordinator = Field(self, "coordinator");
  if (coordinator.is_object()) {
    const bool connected = Field(coordinator, "connected") == true;
    const uint64_t since = Unsigned(coordinator, "since");
    out += "  coordinator: " + String(coordinator, "address") +
           (connected ? ", connected" : ", not connected");
    if (since > 0) out += " for " + Since(since, now);
    const std::string error = String(coordinator, "error");
    if (!connected && !error.empty()) out += " (" + error + ")";
    out += "\n";
  }
  const std::string relay = String(self, "relay");
  if (!relay.empty()) out += "  relay: " + relay + "\n";
  const std::string metrics = String(self, "metrics");
  if (!metrics.empty()) out += "  metrics: " + metrics + "\n";
  // The SSH path's server (join without --no-ssh): its port, and refusals worth a look.
  if (const nlohmann::json& ssh = Field(status, "ssh"); ssh.is_object()) {
    out += "  ssh: port " + std::to_string(Unsigned(ssh, "port"));
    if (const uint64_t n = Unsigned(ssh, "host_key_mismatches"); n > 0) {
      out += ", " + std::to_string(n) + " wrong host keys refused";
    }
    if (const uint64_t n = Unsigned(ssh, "unknown_clients"); n > 0) {
      out += ", " + std::to_string(n) + " unknown logins refused";
    }
    out += "\n";
  }
  const nlohmann::json& peers = Field(status, "peers");
  for (const nlohmann::json& peer : peers.is_array() ? peers : nlohmann::json::array()) {
    out += "\npeer: " + String(peer, "public_key") + "\n";
    const std::string name = String(peer, "name");
    // Peers from a config file have no name beyond their key's prefix.
    const bool named = !name.empty() && name.find("...") == std::string::npos;
    if (named) out += "  name: " + name + "\n";
    const std::string peer_ips = JoinStrings(Field(peer, "mesh_ips"));
    if (!peer_ips.empty() && named) out += "  mesh ips: " + peer_ips + "\n";
    const std::string endpoint = String(peer, "endpoint");
    if (!endpoint.empty()) out += "  endpoint: " + endpoint + "\n";
    const std::string allowed = JoinStrings(Field(peer, "allowed_ips"));
    out += "  allowed ips: " + (allowed.empty() ? std::string("(none)") : allowed) + "\n";
    out += "  path: " + String(peer, "path");
    if (const nlohmann::json& rtt = Field(peer, "rtt_ms"); rtt.is_number()) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), ", rtt %.1f ms", rtt.get<double>());
      out += buf;
    }
    out += "\n";
    if (const nlohmann::json& online = Field(peer, "online"); online.is_boolean()) {
      out += online.get<bool>()
                 ? std::string("  status: online\n")
                 : "  status: offline, last seen " + Ago(Unsigned(peer, "last_seen"), now) + "\n";
    }
    const uint64_t failures = Unsigned(peer, "handshake_failures");
    if (failures > 0) out += "  failed handshakes: " + std::to_string(failures) + "\n";
    out += "  latest handshake: " + Ago(Unsigned(peer, "latest_handshake"), now) + "\n";
    out += "  transfer: " + HumanBytes(Unsigned(peer, "rx_bytes")) + " received, " +
           HumanBytes(Unsigned(peer, "tx_bytes")) + " sent\n";
    const uint64_t keepalive = Unsigned(peer, "persistent_keepalive");
    if (keepalive > 0) out += "  persistent keepalive: every " + std::to_string(keepalive) + " s\n";
  }
  const nlohmann::json& pods = Field(status, "attached_pods");
  if (pods.is_array() && !pods.empty()) {
    out += "\nattached pods:\n";
    for (const nlohmann::json& pod : pods) {
      out += "  " + String(pod, "name") + ": " + JoinStrings(Field(pod, "addresses"));
      if (Field(pod, "detaching") == true) out += " (detaching: the coordinator has not confirmed)";
      out += "\n";
    }
  }
  if (const uint64_t pod_peers = Unsigned(status, "pod_peers"); pod_peers > 0) {
    out += "\npods in the mesh: " + std::to_string(pod_peers) + "\n";
  }
  std::string drops;
  const nlohmann::json& drop_counts = Field(status, "drops");
  if (drop_counts.is_object()) {
    for (const auto& [name, count] : drop_counts.items()) {
      const uint64_t n = AsUnsigned(count);
      if (n > 0) drops += " " + name + "=" + std::to_string(n);
    }
  }
  if (!drops.empty()) out += "\ndropped:" + drops + "\n";
  const uint64_t posts_dropped = Unsigned(Field(status, "control_loop"), "posts_dropped");
  if (posts_dropped > 0) {
    out += "\ncontrol loop: " + std::to_string(posts_dropped) +
           " posts dropped (its queue was full)\n";
  }
  if (auto filter = status.find("filter"); filter != status.end()) {
    out += "\n" + policy::FormatFilterStatus(*filter);
  }
  out += FormatExitStatus(Field(status, "exit"));
  const nlohmann::json& warnings = Field(self, "warnings");
  if (warnings.is_array() && !warnings.empty()) {
    out += "\n";
    for (const nlohmann::json& warning : warnings) {
      if (warning.is_string()) out += "warning: " + warning.get<std::string>() + "\n";
    }
  }
  return out;
}

std::vector<std::string> StatusProblems(const nlohmann::json& status) {
  std::vector<std::string> problems;
  const nlohmann::json& self = Field(status, "self");
  const std::string interface_name = String(self, "interface");
  const nlohmann::json& coordinator = Field(self, "coordinator");
  if (!coordinator.is_object()) return problems;
  if (JoinStrings(Field(self, "mesh_ips")).empty()) {
    problems.push_back(interface_name + ": no mesh address yet (not registered)");
  }
  if (Field(coordinator, "connected") != true) {
    const std::string error = String(coordinator, "error");
    problems.push_back(interface_name + ": not connected to the coordinator at " +
                       String(coordinator, "address") + (error.empty() ? "" : " (" + error + ")"));
  }
  return problems;
}

}  // namespace tunnelmesh
