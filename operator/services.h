// The listeners every operator mode runs (coordinator gRPC over TLS, STUN, the WebSocket relay, the
// central mesh DNS server on UDP/TCP and as CoreDNS's DnsService on the gRPC port), the options
// both modes share, and the counters file. Used by main.cc (standalone) and kube_mode.cc
// (Kubernetes, where only the leader runs them).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "lib/metrics/http_server.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/grpc_service.h"
#include "operator/dns/central_dns_server.h"
#include "operator/metrics/operator_metrics.h"
#include "operator/relay/relay_server.h"
#include "operator/stun/stun_server.h"

namespace tunnelmesh {

// Distinct defaults for every listener (docs/ports.md): the agent's data port is 51820; STUN's,
// the relay's and the central DNS server's are in their headers.
inline constexpr int kDefaultGrpcPort = 7700;

// Bounds of --psk-rollover-step. Each step must reach every member before the next one starts
// (settings arrive well under a second; the coordinator looks for due steps every second), and a
// rollover should end within a day.
inline constexpr absl::Duration kMinPskRolloverStep = absl::Seconds(2);
inline constexpr absl::Duration kMaxPskRolloverStep = absl::Hours(24);

struct OperatorOptions {
  bool standalone = false;
  std::string manifests;
  std::string state_dir;
  std::string listen_address = "0.0.0.0";
  std::string advertise_address;
  int grpc_port = kDefaultGrpcPort;
  int stun_port = kDefaultStunPort;
  int relay_port = kDefaultRelayPort;
  // The relay's connection caps (RelayServer::Options; lowered to fit the descriptor limit).
  size_t relay_max_connections = RelayServer::Options().max_connections;
  size_t relay_max_connections_per_source = RelayServer::Options().max_connections_per_source;
  size_t relay_max_pending_connections = RelayServer::Options().max_pending_connections;
  int dns_port = kDefaultDnsPort;  // 0 picks a free port; --no-dns turns the server off.
  bool no_dns = false;
  std::string log_level = "info";
  std::string log_format = "text";  // --log-format: text or json (lib/base/log.h).
  // --metrics-address (empty: 127.0.0.1 and kDefaultOperatorMetricsPort) and --no-metrics.
  std::string metrics_address;
  bool no_metrics = false;
  // Coordinator::Options::quarantine and member_expiry (--ip-quarantine, --member-expiry).
  absl::Duration ip_quarantine = absl::Hours(24);
  absl::Duration member_expiry = absl::ZeroDuration();
  // Registrations per second from one source address (--register-rate; bursts of 4x, Hello 2x).
  double register_rate = 50;
  // Coordinator::Options::psk_rollover_step (--psk-rollover-step, kMin/kMaxPskRolloverStep).
  absl::Duration psk_rollover_step = absl::Seconds(15);
  // Kubernetes mode.
  std::string kubeconfig;
  std::string namespace_name;
  std::string identity;
  std::string lease_name = "tunnelmesh-operator";
  std::string lease_duration = "15s";
  std::string renew_deadline = "10s";
  std::string coordinator_secret = "tunnelmesh-coordinator";
  std::string ca_configmap = "tunnelmesh-ca";
  std::string agent_service_account;  // NAMESPACE/NAME
  // The operator's own pod, labelled tunnelmesh.io/role=standby|leader (--label-pod).
  std::string label_pod;
  // `delete-mesh NAME`: the Mesh to delete, then exit; how long the operator gets to finalize it.
  std::string delete_mesh;
  absl::Duration delete_mesh_wait = absl::Seconds(60);
  // Kubernetes mode: keep the cluster's CoreDNS forwarding the mesh domains to dns_service
  // (operator/dns/coredns_config_reconciler.h); `coredns --remove` removes that forwarding.
  bool configure_coredns = false;
  bool coredns_remove = false;
  std::string coredns_configmap = "kube-system/coredns";  // NAMESPACE/NAME
  std::string dns_service;                                // NAME, in the operator's namespace
  std::string release;  // the Helm release the markers name; default: dns_service
};

// The relay, once it runs: members that leave or are evicted lose their relay session. (The relay
// asks the coordinator who is a member and the coordinator tells the relay who left: this pointer
// breaks that cycle. Set once, after the relay started.)
struct RelayRevoker {
  std::atomic<RelayServer*> relay{nullptr};
};

struct Services {
  // Before grpc: its DnsService must outlive the gRPC server, which is destroyed first.
  std::unique_ptr<CentralDnsServer> dns;  // Null with --no-dns.
  std::unique_ptr<CoordinatorServer> grpc;
  std::unique_ptr<StunServer> stun;
  std::unique_ptr<RelayServer> relay;
};

// What members are told about STUN and the relay, the relay revocation hook, and the change hook
// that wakes the central DNS server (`dns_changes`, shared with StartServices).
Coordinator::Options BaseCoordinatorOptions(const OperatorOptions& options,
                                            const SecretKey& relay_key, RelayRevoker* revoker,
                                            std::shared_ptr<ZoneChangeSignal> dns_changes);

// Starts the central DNS server (unless --no-dns), gRPC (with the DNS server's DnsService and its
// listener watchdog thread, see grpc_service.h), STUN and the relay, and connects `revoker` to the
// relay. Errors name the flag.
[[nodiscard]] absl::StatusOr<Services> StartServices(const OperatorOptions& options,
                                                     Coordinator* coordinator,
                                                     const TlsIdentity& tls,
                                                     const SecretKey& relay_key,
                                                     RelayRevoker* revoker,
                                                     std::shared_ptr<ZoneChangeSignal> dns_changes);

// Counters of every service, written to STATE_DIR/counters.json for operators and tests: rejected
// joins, malformed requests, garbage on the STUN and relay ports, DNS queries by outcome, the gRPC
// listener watchdog's checks and restarts, preshared-key rollover steps and failed key saves.
// Called about once a second.
void WriteCounters(const std::string& state_dir, Coordinator& coordinator,
                   const Services& services);

// The Prometheus endpoint (--metrics-address, --no-metrics): null when turned off. A bad address
// is kInvalidArgument (a usage error); a busy port or an address that is not local names the
// flag. `metrics` must outlive the server.
[[nodiscard]] absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> StartMetricsServer(
    const OperatorOptions& options, const OperatorMetrics* metrics);

// What a scrape reads once the coordinator and the listeners run.
OperatorMetricsSources MetricsSourcesOf(Coordinator* coordinator, const Services& services);

void LogReady(const OperatorOptions& options, const Services& services, const std::string& ca_hash,
              size_t meshes, size_t members);

}  // namespace tunnelmesh
