// The agent's Prometheus metrics (docs/metrics.md lists them): rendered from the same snapshot
// `status --json` prints (BuildAgentStatus, built on the control thread), so both always agree
// and a scrape touches no data-plane lock beyond the status walk's brief per-peer reads.
//
// Per-peer series are bounded: the first kMaxPeerSeries peers by name get their own; the counters
// of the rest are summed under peer="_other" (member names are DNS labels, which cannot start
// with '_'), and their gauges are left out; tunnelmesh_agent_peers counts every peer.
//
// Pure: any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/net/ip.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

// The agent's metrics port (docs/ports.md): distinct from every other default of the project and
// from common exporters'. On loopback by default; the chart binds the node's IP.
inline constexpr uint16_t kDefaultAgentMetricsPort = 7710;
inline constexpr char kDefaultAgentMetricsAddress[] = "127.0.0.1:7710";

// --metrics-address and --no-metrics, checked.
struct MetricsFlags {
  std::optional<Endpoint> address;  // nullopt: --no-metrics.
  bool given = false;               // --metrics-address was given (a busy port is then fatal).
};
// `address`: the flag's value, empty when not given. Errors name the flag (usage errors).
[[nodiscard]] absl::StatusOr<MetricsFlags> CheckMetricsFlags(const std::string& address,
                                                             bool no_metrics);

inline constexpr size_t kMaxPeerSeries = 256;
// The peer label of the peers beyond kMaxPeerSeries.
inline constexpr char kOtherPeers[] = "_other";

struct AgentMetricsExtras {
  std::string version;
  // The mesh DNS server's queries by outcome (dns::OutcomeName); empty without one.
  std::map<std::string, uint64_t> dns_queries;
  // The metrics endpoint's own answers (MetricsServer counters).
  uint64_t metrics_scrapes = 0;
  uint64_t metrics_bad_requests = 0;
  uint64_t metrics_unavailable = 0;
};

// `status`: the object BuildAgentStatus made (a missing or mistyped field reads as absent or 0).
// `now` turns the last handshake into an age.
std::string RenderAgentMetrics(const nlohmann::json& status, const AgentMetricsExtras& extras,
                               absl::Time now, size_t max_peer_series = kMaxPeerSeries);

}  // namespace tunnelmesh
