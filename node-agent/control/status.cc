#include "node-agent/control/status.h"

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

std::string Ago(int64_t unix_seconds, absl::Time now) {
  if (unix_seconds == 0) return "never";
  int64_t seconds = absl::ToUnixSeconds(now) - unix_seconds;
  if (seconds < 0) seconds = 0;
  std::string out;
  if (seconds >= 3600) out += std::to_string(seconds / 3600) + " h, ";
  if (seconds >= 60) out += std::to_string(seconds / 60 % 60) + " min, ";
  out += std::to_string(seconds % 60) + " s ago";
  return out;
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

std::string FormatStatus(const nlohmann::json& status, absl::Time now) {
  std::string out;
  const auto& self = status["self"];
  out += "interface: " + self.value("interface", std::string()) + "\n";
  const std::string self_name = self.value("name", std::string());
  if (!self_name.empty() && self_name != self.value("interface", std::string())) {
    out += "  name: " + self_name + "\n";
  }
  out += "  public key: " + self.value("public_key", std::string()) + "\n";
  out += "  listening port: " + std::to_string(self.value("listen_port", 0)) + "\n";
  std::string ips;
  for (const auto& ip : self["mesh_ips"]) ips += (ips.empty() ? "" : ", ") + ip.get<std::string>();
  if (!ips.empty()) out += "  addresses: " + ips + "\n";
  for (const auto& peer : status["peers"]) {
    out += "\npeer: " + peer.value("public_key", std::string()) + "\n";
    const std::string name = peer.value("name", std::string());
    // Peers from a config file have no name beyond their key's prefix.
    if (!name.empty() && name.find("...") == std::string::npos) out += "  name: " + name + "\n";
    std::string peer_ips;
    for (const auto& ip : peer["mesh_ips"]) {
      peer_ips += (peer_ips.empty() ? "" : ", ") + ip.get<std::string>();
    }
    if (!peer_ips.empty() && !name.empty() && name.find("...") == std::string::npos) {
      out += "  mesh ips: " + peer_ips + "\n";
    }
    std::string endpoint = peer.value("endpoint", std::string());
    if (!endpoint.empty()) out += "  endpoint: " + endpoint + "\n";
    std::string allowed;
    for (const auto& p : peer["allowed_ips"]) {
      allowed += (allowed.empty() ? "" : ", ") + p.get<std::string>();
    }
    out += "  allowed ips: " + (allowed.empty() ? std::string("(none)") : allowed) + "\n";
    out += "  path: " + peer.value("path", std::string()) + "\n";
    out += "  latest handshake: " + Ago(peer.value("latest_handshake", int64_t{0}), now) + "\n";
    out += "  transfer: " + HumanBytes(peer.value("rx_bytes", uint64_t{0})) + " received, " +
           HumanBytes(peer.value("tx_bytes", uint64_t{0})) + " sent\n";
    int keepalive = peer.value("persistent_keepalive", 0);
    if (keepalive > 0) out += "  persistent keepalive: every " + std::to_string(keepalive) + " s\n";
  }
  std::string drops;
  for (const auto& [name, count] : status["drops"].items()) {
    if (count.get<uint64_t>() > 0)
      drops += " " + name + "=" + std::to_string(count.get<uint64_t>());
  }
  if (!drops.empty()) out += "\ndropped:" + drops + "\n";
  if (auto filter = status.find("filter"); filter != status.end()) {
    out += "\n" + policy::FormatFilterStatus(*filter);
  }
  return out;
}

}  // namespace tunnelmesh
