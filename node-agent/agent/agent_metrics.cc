#include "node-agent/agent/agent_metrics.h"

#include <algorithm>
#include <array>
#include <set>
#include <utility>
#include <vector>

#include "lib/metrics/exposition.h"
#include "lib/metrics/http_server.h"
#include "lib/noise/counters.h"

namespace tunnelmesh {
namespace {

using metrics::Exposition;
using metrics::Family;

const nlohmann::json& Field(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

uint64_t Count(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() > 0) return value.get<int64_t>();
  return 0;
}

std::string Text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : std::string();
}

// The per-peer counters, in the order of kPeerCounters.
constexpr std::array<std::pair<const char*, const char*>, 7> kPeerCounters{{
    {"rx_bytes", "tunnelmesh_agent_peer_receive_bytes"},
    {"tx_bytes", "tunnelmesh_agent_peer_transmit_bytes"},
    {"rx_packets", "tunnelmesh_agent_peer_receive_packets"},
    {"tx_packets", "tunnelmesh_agent_peer_transmit_packets"},
    {"handshakes", "tunnelmesh_agent_peer_handshakes"},
    {"handshake_failures", "tunnelmesh_agent_peer_handshake_failures"},
    {"path_changes", "tunnelmesh_agent_peer_path_changes"},
}};
constexpr std::array<const char*, 7> kPeerCounterHelp{
    "Bytes received from the peer (decrypted WireGuard payload, as wg show counts them).",
    "Bytes sent to the peer (WireGuard payload before encryption, as wg show counts them).",
    "Packets received from the peer.",
    "Packets sent to the peer.",
    "WireGuard handshakes completed with the peer.",
    "Handshakes with the peer that failed (timed out or rejected).",
    "Changes of the path to the peer after the first (relay, ssh, direct and back).",
};

void AddPeers(const nlohmann::json& peers, absl::Time now, size_t max_peer_series, Exposition* e) {
  std::vector<const nlohmann::json*> sorted;
  if (peers.is_array()) {
    for (const nlohmann::json& peer : peers) sorted.push_back(&peer);
  }
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const nlohmann::json* a, const nlohmann::json* b) {
                     return Text(Field(*a, "name")) < Text(Field(*b, "name"));
                   });
  std::map<std::string, uint64_t> by_path;
  Family& path = e->Gauge("tunnelmesh_agent_peer_path",
                          "1 for the path each peer is reached on (direct, ssh, relay or none).");
  Family& rtt = e->Gauge("tunnelmesh_agent_peer_rtt_seconds",
                         "Round trip of the last discovery ping on the direct or SSH path to the "
                         "peer (absent while the peer is reached through the relay).");
  Family& age = e->Gauge("tunnelmesh_agent_peer_last_handshake_age_seconds",
                         "Seconds since the last completed handshake with the peer (absent before "
                         "the first).");
  Family& online = e->Gauge("tunnelmesh_agent_peer_online",
                            "1 when the peer is online (traffic or handshakes lately, or the "
                            "coordinator says so), else 0.");
  std::vector<Family*> counters;
  for (size_t i = 0; i < kPeerCounters.size(); ++i) {
    counters.push_back(&e->Counter(kPeerCounters[i].second, kPeerCounterHelp[i]));
  }
  std::array<uint64_t, kPeerCounters.size()> other{};
  bool have_other = false;
  const int64_t now_seconds = absl::ToUnixSeconds(now);
  for (size_t index = 0; index < sorted.size(); ++index) {
    const nlohmann::json& peer = *sorted[index];
    std::string path_name = Text(Field(peer, "path"));
    if (path_name.empty()) path_name = "direct";
    ++by_path[path_name];
    if (index >= max_peer_series) {
      have_other = true;
      for (size_t i = 0; i < kPeerCounters.size(); ++i) {
        other[i] += Count(Field(peer, kPeerCounters[i].first));
      }
      continue;
    }
    const metrics::Labels labels{{"peer", Text(Field(peer, "name"))}};
    path.AddCount({{"peer", labels[0].second}, {"path", path_name}}, 1);
    if (const nlohmann::json& ms = Field(peer, "rtt_ms"); ms.is_number()) {
      rtt.Add(labels, ms.get<double>() / 1000.0);
    }
    const uint64_t handshake = Count(Field(peer, "latest_handshake"));
    if (handshake > 0) {
      age.AddCount(labels, now_seconds > static_cast<int64_t>(handshake)
                               ? static_cast<uint64_t>(now_seconds) - handshake
                               : 0);
    }
    if (const nlohmann::json& on = Field(peer, "online"); on.is_boolean()) {
      online.AddCount(labels, on.get<bool>() ? 1 : 0);
    }
    for (size_t i = 0; i < kPeerCounters.size(); ++i) {
      const nlohmann::json& value = Field(peer, kPeerCounters[i].first);
      if (!value.is_null()) counters[i]->AddCount(labels, Count(value));
    }
  }
  if (have_other) {
    for (size_t i = 0; i < kPeerCounters.size(); ++i) {
      counters[i]->AddCount({{"peer", kOtherPeers}}, other[i]);
    }
  }
  Family& peer_count = e->Gauge("tunnelmesh_agent_peers", "Peers by the path they are reached on.");
  for (const char* kind : {"direct", "ssh", "relay", "none"}) by_path.emplace(kind, 0);
  for (const auto& [kind, count] : by_path) peer_count.AddCount({{"path", kind}}, count);
}

void AddDrops(const nlohmann::json& drops, Exposition* e) {
  std::set<std::string> outcome_names;
  for (size_t i = 0; i < static_cast<size_t>(noise::Outcome::kCount); ++i) {
    outcome_names.insert(noise::OutcomeName(static_cast<noise::Outcome>(i)));
  }
  Family& dropped = e->Counter(
      "tunnelmesh_agent_drops",
      "Datagrams and packets the data plane dropped, by reason (docs/troubleshooting.md).");
  Family& outcomes = e->Counter("tunnelmesh_agent_handshake_outcomes",
                                "Handshake outcomes that are not drops: cookie replies sent under "
                                "load, responses accepted with the second preshared key.");
  if (!drops.is_object()) return;
  for (const auto& [name, value] : drops.items()) {
    if (outcome_names.count(name) != 0) {
      outcomes.AddCount({{"outcome", name}}, Count(value));
    } else {
      dropped.AddCount({{"reason", name}}, Count(value));
    }
  }
}

void AddFilter(const nlohmann::json& filter, Exposition* e) {
  if (!filter.is_object()) return;
  e->Gauge("tunnelmesh_agent_filter_enabled",
           "1 when a packet-filter rule set from the coordinator is installed.")
      .AddCount({}, Field(filter, "enabled") == true ? 1 : 0);
  Family& verdicts = e->Counter(
      "tunnelmesh_agent_filter_verdicts",
      "Packets the filter decided, by the PeerPolicy that decided them (policy=\"\" for the "
      "Mesh's default action) and the verdict.");
  const nlohmann::json& policies = Field(filter, "policies");
  if (policies.is_array()) {
    for (const nlohmann::json& p : policies) {
      const std::string name = Text(Field(p, "name"));
      verdicts.AddCount({{"policy", name}, {"verdict", "allow"}}, Count(Field(p, "allowed")));
      verdicts.AddCount({{"policy", name}, {"verdict", "deny"}}, Count(Field(p, "denied")));
    }
  }
  const nlohmann::json& by_default = Field(filter, "default");
  if (by_default.is_object()) {
    verdicts.AddCount({{"policy", ""}, {"verdict", "allow"}}, Count(Field(by_default, "allowed")));
    verdicts.AddCount({{"policy", ""}, {"verdict", "deny"}}, Count(Field(by_default, "denied")));
  }
  Family& drops =
      e->Counter("tunnelmesh_agent_filter_drops", "Packets the filter dropped, by reason.");
  if (const nlohmann::json& d = Field(filter, "drops"); d.is_object()) {
    for (const auto& [name, value] : d.items()) drops.AddCount({{"reason", name}}, Count(value));
  }
  if (const nlohmann::json& flows = Field(filter, "tracked_flows"); flows.is_number()) {
    e->Gauge("tunnelmesh_agent_filter_tracked_flows", "Connections in the filter's tracking table.")
        .AddCount({}, Count(flows));
  }
  Family& rule_sets = e->Counter("tunnelmesh_agent_filter_rule_sets",
                                 "Rule sets from the coordinator, by result (applied, rejected).");
  rule_sets.AddCount({{"result", "applied"}}, Count(Field(filter, "rule_sets_applied")));
  rule_sets.AddCount({{"result", "rejected"}}, Count(Field(filter, "rule_sets_rejected")));
}

}  // namespace

absl::StatusOr<MetricsFlags> CheckMetricsFlags(const std::string& address, bool no_metrics) {
  MetricsFlags flags;
  flags.given = !address.empty();
  if (no_metrics) {
    if (flags.given) {
      return absl::InvalidArgumentError(
          "--metrics-address and --no-metrics contradict each other: give one of them");
    }
    return flags;
  }
  absl::StatusOr<Endpoint> parsed = metrics::ParseListenAddress(
      flags.given ? address : std::string(kDefaultAgentMetricsAddress), "--metrics-address");
  if (!parsed.ok()) return parsed.status();
  flags.address = *parsed;
  return flags;
}

std::string RenderAgentMetrics(const nlohmann::json& status, const AgentMetricsExtras& extras,
                               absl::Time now, size_t max_peer_series) {
  Exposition e;
  const nlohmann::json& self = Field(status, "self");
  e.Gauge("tunnelmesh_agent_info",
          "1, labelled with the agent's interface, member name, mesh and "
          "version.")
      .AddCount({{"interface", Text(Field(self, "interface"))},
                 {"name", Text(Field(self, "name"))},
                 {"mesh", Text(Field(self, "mesh"))},
                 {"version", extras.version}},
                1);
  const nlohmann::json& coordinator = Field(self, "coordinator");
  if (coordinator.is_object()) {
    e.Gauge("tunnelmesh_agent_coordinator_connected",
            "1 while the watch stream to the coordinator is up.")
        .AddCount({}, Field(coordinator, "connected") == true ? 1 : 0);
  }
  const std::string relay = Text(Field(self, "relay"));
  if (!relay.empty() && relay != "none") {
    e.Gauge("tunnelmesh_agent_relay_connected", "1 while the connection to the relay is up.")
        .AddCount({}, relay == "connected" ? 1 : 0);
  }
  AddPeers(Field(status, "peers"), now, max_peer_series, &e);
  if (const nlohmann::json& pods = Field(status, "attached_pods"); pods.is_array()) {
    uint64_t attached = 0;
    for (const nlohmann::json& pod : pods) attached += Field(pod, "detaching") == true ? 0 : 1;
    e.Gauge("tunnelmesh_agent_attached_pods",
            "Pods this agent attached to the mesh for tunnelmesh-cni (join only).")
        .AddCount({}, attached);
  }
  AddDrops(Field(status, "drops"), &e);
  AddFilter(Field(status, "filter"), &e);
  e.Counter("tunnelmesh_agent_control_posts_dropped",
            "Work the control loop refused because its queue was full.")
      .AddCount({}, Count(Field(Field(status, "control_loop"), "posts_dropped")));
  Family& dns = e.Counter("tunnelmesh_agent_dns_queries",
                          "Queries the agent's mesh DNS server answered, by outcome.");
  for (const auto& [outcome, count] : extras.dns_queries)
    dns.AddCount({{"outcome", outcome}}, count);
  Family& scrapes = e.Counter("tunnelmesh_agent_metrics_requests",
                              "Requests to this metrics endpoint, by HTTP status class.");
  scrapes.AddCount({{"code", "200"}}, extras.metrics_scrapes);
  scrapes.AddCount({{"code", "4xx"}}, extras.metrics_bad_requests);
  scrapes.AddCount({{"code", "503"}}, extras.metrics_unavailable);
  return e.Text();
}

}  // namespace tunnelmesh
