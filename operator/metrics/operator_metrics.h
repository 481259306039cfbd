// The operator's Prometheus metrics (docs/metrics.md lists them): read at each scrape from the
// counters and state the coordinator, the relay, STUN, the central DNS server, the gRPC listener
// watchdog and the Kubernetes controllers already keep. Nothing is counted twice: every value is
// one of those counters, a gauge of current state, or a histogram they observe into.
//
// A standby replica (Kubernetes mode, not leading) serves tunnelmesh_operator_info and
// tunnelmesh_operator_leader 0 only: its coordinator and listeners do not run.
#pragma once

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/grpc_service.h"
#include "operator/dns/central_dns_server.h"
#include "operator/reconcilers/controller.h"
#include "operator/relay/relay_server.h"
#include "operator/stun/stun_server.h"

namespace tunnelmesh {

// The operator's metrics port (docs/ports.md), next to the coordinator's 7700 and 7701.
inline constexpr int kDefaultOperatorMetricsPort = 7702;

// What a scrape reads. Any pointer may be null (not running: a standby, --no-dns, standalone
// mode has no controllers). None is owned.
struct OperatorMetricsSources {
  Coordinator* coordinator = nullptr;
  const CoordinatorServer* grpc = nullptr;
  const RelayServer* relay = nullptr;
  const StunServer* stun = nullptr;
  const CentralDnsServer* dns = nullptr;
  std::vector<const Controller*> controllers;
};

// The text of one scrape. Any thread (the sources' own reads are thread-safe).
std::string RenderOperatorMetrics(const OperatorMetricsSources& sources, bool leader,
                                  const std::string& version);

// Holds the sources for the metrics server's thread: the operator attaches them once it leads
// and detaches them before they are destroyed (Detach waits for a scrape in progress).
class OperatorMetrics {
 public:
  explicit OperatorMetrics(std::string version) : version_(std::move(version)) {}

  void SetLeader(bool leader) ABSL_LOCKS_EXCLUDED(mu_);
  void Attach(OperatorMetricsSources sources) ABSL_LOCKS_EXCLUDED(mu_);
  void Detach() ABSL_LOCKS_EXCLUDED(mu_);
  // The metrics server's Render. Holds mu_ while it reads the sources (lock order: mu_, then the
  // coordinator's and the servers' own locks; they never call back here).
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string version_;
  mutable absl::Mutex mu_;
  OperatorMetricsSources sources_ ABSL_GUARDED_BY(mu_);
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tunnelmesh
