// tunnelmesh-operator: parses flags, wires the coordinator together, handles signals.
//   tunnelmesh-operator --standalone --manifests DIR --state-dir DIR [--grpc-port N] ...
//   tunnelmesh-operator [--kubeconfig FILE] --namespace NS ...   (Kubernetes: in a pod, or outside
//                                                                  with a kubeconfig)
//   tunnelmesh-operator coredns --remove --namespace NS --dns-service NAME [--release NAME]
//                                            (the chart's uninstall hook)
//   tunnelmesh-operator members|remove|readmit|refused --state-dir DIR ...
//                                            (standalone admin, operator/admin_commands.h)
// Kubernetes mode lives in kube_mode.cc, the listeners both modes run in services.cc.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <tuple>

#include "CLI/CLI.hpp"
#include "absl/cleanup/cleanup.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "lib/base/log_format.h"
#include "lib/base/rlimit.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "operator/admin_commands.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/manifests.h"
#include "operator/coordinator/psk_store.h"
#include "operator/coordinator/state_store.h"
#include "operator/kube_mode.h"
#include "operator/reconcilers/coordinator_identity.h"
#include "operator/services.h"
#include "operator/tls/tls_files.h"
#include "tm_version.h"

namespace tunnelmesh {
namespace {

// Waits up to 250 ms for SIGINT/SIGTERM; true when one arrived.
bool SignalArrived(const sigset_t& signals) {
  timespec timeout{0, 250'000'000};
  int sig = sigtimedwait(&signals, nullptr, &timeout);
  if (sig != SIGINT && sig != SIGTERM) return false;
  TM_LOG_INFO("signal {} received: shutting down", sig);
  return true;
}

// Standalone PeerPolicies: rejected ones are logged (there is no status to write them to), the
// others compiled; a policy that selects nothing on a side is worth a warning too.
void ApplyManifestPolicies(Coordinator* coordinator, ManifestPolicies policies) {
  for (const std::string& why : policies.rejected) TM_LOG_WARN("PeerPolicy rejected: {}", why);
  std::vector<std::string> names;
  for (const PeerPolicySpec& p : policies.accepted) names.push_back(p.name);
  coordinator->SetPolicies(std::move(policies.accepted));
  for (const std::string& name : names) {
    std::optional<policy::PolicyStats> stats = coordinator->PolicyStatsFor(name);
    if (!stats) continue;
    if (stats->selected_sources == 0 || stats->selected_destinations == 0) {
      TM_LOG_WARN("PeerPolicy {} selects no member on its {} side (yet): it has no effect", name,
                  stats->selected_sources == 0 ? "from" : "to");
    }
  }
}

// Every member holds a gRPC connection and the relay one more: the soft descriptor limit (often
// 1024) goes up to the hard limit the administrator set, before any listener opens.
void RaiseFileLimit() {
  absl::StatusOr<DescriptorLimit> limit = RaiseDescriptorLimit();
  if (!limit.ok()) {
    TM_LOG_WARN("{}: the coordinator serves fewer members than it could",
                std::string(limit.status().message()));
    return;
  }
  TM_LOG_DEBUG("descriptor limit (RLIMIT_NOFILE): soft {} (was {}), hard {}", limit->soft,
               limit->soft_before, limit->hard);
}

int RunStandalone(const OperatorOptions& options, const sigset_t& signals) {
  if (options.manifests.empty() || options.state_dir.empty()) {
    return Usage("--standalone needs --manifests DIR and --state-dir DIR");
  }
  // The metrics port first: a busy one stops the start before anything else is opened.
  OperatorMetrics operator_metrics(kTunnelMeshVersion);
  operator_metrics.SetLeader(true);  // Standalone: the only coordinator.
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      StartMetricsServer(options, &operator_metrics);
  if (!metrics_server.ok()) return FailStart(metrics_server.status());
  ManifestPolicies policies;
  absl::StatusOr<std::vector<MeshSpec>> meshes = LoadManifests(options.manifests, &policies);
  if (!meshes.ok()) return Usage(std::string(meshes.status().message()));
  if (meshes->empty()) {
    return Usage("--manifests " + options.manifests +
                 " holds no Mesh (apiVersion "
                 "tunnelmesh.io/v1alpha1, kind Mesh)");
  }
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(options.state_dir);
  if (!store.ok()) return Fail(std::string(store.status().message()));
  absl::StatusOr<TlsIdentity> tls = LoadOrCreateTlsIdentity(options.state_dir + "/tls");
  if (!tls.ok()) return Fail(std::string(tls.status().message()));
  absl::StatusOr<std::string> ca_hash = CaCertHash(tls->ca_cert_pem);
  if (!ca_hash.ok()) return Fail(std::string(ca_hash.status().message()));
  absl::StatusOr<SecretKey> relay_key = LoadOrCreateKeyFile(options.state_dir + "/relay.key");
  if (!relay_key.ok()) return Fail(std::string(relay_key.status().message()));

  // The meshes' preshared keys (STATE_DIR/preshared-keys.json): a damaged file stops the start
  // here, with its name, rather than giving every mesh a new key.
  FilePresharedKeyStore psk_store(options.state_dir);
  if (absl::StatusOr<PresharedKeyRecords> psks = psk_store.Load(); !psks.ok()) {
    return Fail(std::string(psks.status().message()));
  }

  RelayRevoker revoker;
  auto dns_changes = std::make_shared<ZoneChangeSignal>();
  // Keys an admin removed (STATE_DIR/removed-keys.json): a damaged file stops the start, naming it.
  absl::StatusOr<std::unique_ptr<RemovedKeys>> removed_keys = RemovedKeys::Open(options.state_dir);
  if (!removed_keys.ok()) return Fail(std::string(removed_keys.status().message()));
  Coordinator::Options coordinator_options =
      BaseCoordinatorOptions(options, *relay_key, &revoker, dns_changes);
  coordinator_options.ca_hash = *ca_hash;
  coordinator_options.psk_store = &psk_store;
  coordinator_options.removed_keys = removed_keys->get();
  Coordinator coordinator(store->get(), std::move(coordinator_options));
  coordinator.SetMeshes(*meshes);
  ApplyManifestPolicies(&coordinator, std::move(policies));
  absl::StatusOr<Services> services =
      StartServices(options, &coordinator, *tls, *relay_key, &revoker, dns_changes);
  if (!services.ok()) return Fail(std::string(services.status().message()));
  operator_metrics.Attach(MetricsSourcesOf(&coordinator, *services));
  // Every return from here on detaches the sources before they are destroyed.
  absl::Cleanup detach_metrics = [&operator_metrics] { operator_metrics.Detach(); };
  AdminRequests admin_requests(&coordinator, removed_keys->get());
  absl::StatusOr<std::unique_ptr<ControlServer>> admin_socket =
      ServeAdminSocket(options.state_dir, &admin_requests);
  if (!admin_socket.ok()) return Fail(std::string(admin_socket.status().message()));
  if (absl::Status s = WriteFileAtomically(options.state_dir + "/ca-hash", *ca_hash + "\n", 0644);
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  LogReady(options, *services, *ca_hash, meshes->size(), coordinator.member_count());

  // Manifests: pick up added, changed and removed files within a second. A directory that cannot
  // be read (e.g. while descriptors are exhausted) keeps the current Meshes (manifests.h).
  auto next_counters = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> fingerprint = ManifestFingerprint(options.manifests);
  ManifestWatcher watcher(options.manifests, fingerprint.value_or(""));
  while (true) {
    if (std::chrono::steady_clock::now() >= next_counters) {
      coordinator.ExpireIdle(absl::Now());
      coordinator.refused_joins().Tick(absl::Now());
      WriteCounters(options.state_dir, coordinator, *services);
      next_counters = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    if (SignalArrived(signals)) break;
    std::optional<ManifestWatcher::Change> change = watcher.Poll();
    if (!change) continue;
    coordinator.SetMeshes(change->meshes);
    const size_t policy_count = change->policies.accepted.size();
    ApplyManifestPolicies(&coordinator, std::move(change->policies));
    TM_LOG_INFO("manifests reloaded: meshes={} policies={}", change->meshes.size(), policy_count);
  }
  services->grpc->Shutdown();
  WriteCounters(options.state_dir, coordinator, *services);
  return 0;
}

int Run(const OperatorOptions& options) {
  if (!InitLogging(options.log_level)) {
    return Usage("--log-level \"" + options.log_level +
                 "\" is not one of trace, debug, info, warn, error");
  }
  if (!SetLogFormat(options.log_format)) {
    return Usage("--log-format \"" + options.log_format + "\" is not text or json");
  }
  InitCrypto();
  RaiseFileLimit();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (options.coredns_remove) return RunCorednsRemoval(options);
  if (!options.delete_mesh.empty()) return RunMeshDeletion(options);
  if (options.standalone) return RunStandalone(options, signals);
  // SIGINT/SIGTERM set `stop` from their own thread, so that every wait of Kubernetes mode can end.
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    while (!done && !stop) stop = SignalArrived(signals);
  });
  const int exit_code = RunKubernetesMode(options, stop);
  done = true;
  signal_thread.join();
  return exit_code;
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  if (tunnelmesh::IsAdminCommand(argc, argv)) return tunnelmesh::RunAdminCommand(argc, argv);
  tunnelmesh::OperatorOptions options;
  CLI::App app{"tunnelmesh-operator: the TunnelMesh coordinator (gRPC, STUN, relay, mesh DNS)"};
  app.set_version_flag("--version",
                       std::string("tunnelmesh-operator ") + tunnelmesh::kTunnelMeshVersion,
                       "print the version and exit");
  app.add_flag("--standalone", options.standalone,
               "run without Kubernetes, from manifests in a directory");
  app.add_option("--manifests", options.manifests, "directory of Mesh and Secret YAML files");
  app.add_option("--state-dir", options.state_dir,
                 "standalone: members, TLS keys and state; Kubernetes: scratch space "
                 "(default /tmp/tunnelmesh-operator)");
  app.add_option("--listen-address", options.listen_address, "address to listen on (0.0.0.0)");
  app.add_option("--advertise-address", options.advertise_address,
                 "host members use for STUN and the relay (default: the host they dialed)");
  app.add_option("--grpc-port", options.grpc_port, "coordinator gRPC port (7700)");
  app.add_option("--stun-port", options.stun_port, "STUN port (3478)");
  app.add_option("--relay-port", options.relay_port, "WebSocket relay port, TLS (7701)");
  app.add_option("--relay-max-connections", options.relay_max_connections,
                 "relay connections in all; more are closed at once (4096, at most half of "
                 "ulimit -n)")
      ->check(CLI::PositiveNumber);
  app.add_option("--relay-max-connections-per-source", options.relay_max_connections_per_source,
                 "relay connections from one IP address (64; members behind one NAT share it)")
      ->check(CLI::PositiveNumber);
  app.add_option("--relay-max-pending-connections", options.relay_max_pending_connections,
                 "relay connections not yet authenticated (256)")
      ->check(CLI::PositiveNumber);
  app.add_option("--dns-port", options.dns_port,
                 "central mesh DNS server port, UDP and TCP on --listen-address (7753)")
      ->check(CLI::Range(0, 65535));
  app.add_flag("--no-dns", options.no_dns,
               "run without the central mesh DNS server (plain DNS and the gRPC DnsService)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  app.add_option("--log-format", options.log_format, "text (default) or json (one object a line)");
  app.add_option("--metrics-address", options.metrics_address,
                 "HOST:PORT of the Prometheus endpoint /metrics (default 127.0.0.1:7702)");
  app.add_flag("--no-metrics", options.no_metrics, "run without the metrics endpoint");
  std::string ip_quarantine = "24h";
  std::string member_expiry = "0s";
  app.add_option("--ip-quarantine", ip_quarantine,
                 "how long a departed member's mesh IPs and name are kept from other keys (24h)");
  app.add_option("--register-rate", options.register_rate,
                 "registrations per second allowed from one source address, in bursts of 4x (50)")
      ->check(CLI::PositiveNumber);
  app.add_option("--member-expiry", member_expiry,
                 "remove members whose agent has not been seen for this long, e.g. 24h for CI "
                 "runners (0s: never)");
  std::string psk_rollover_step = "15s";
  app.add_option("--psk-rollover-step", psk_rollover_step,
                 "time between the three steps of a preshared-key rollover (15s; 2s to 24h)");
  app.add_option("--kubeconfig", options.kubeconfig,
                 "Kubernetes mode outside a pod: kubeconfig file (default $KUBECONFIG)");
  app.add_option("--namespace", options.namespace_name,
                 "the operator's namespace (default $POD_NAMESPACE)");
  app.add_option("--identity", options.identity, "leader election identity (default $POD_NAME)");
  app.add_option("--lease-name", options.lease_name, "Lease for leader election");
  app.add_option("--lease-duration", options.lease_duration,
                 "how long the Lease holds without renewal (15s)");
  app.add_option("--renew-deadline", options.renew_deadline,
                 "how long the leader tries to renew before it exits (10s)");
  app.add_option("--coordinator-secret", options.coordinator_secret,
                 "Secret holding the coordinator's CA and relay keys (created if missing)");
  app.add_option("--ca-configmap", options.ca_configmap,
                 "ConfigMap the CA certificate and its hash are published in");
  app.add_option("--label-pod", options.label_pod,
                 "Kubernetes mode: label this pod (in --namespace) tunnelmesh.io/role=standby, "
                 "and =leader once this replica leads and serves, for a Service that selects the "
                 "leader");
  app.add_option("--agent-service-account", options.agent_service_account,
                 "NAMESPACE/NAME of the ServiceAccount whose tokens may join (TokenReview)");
  app.add_flag("--configure-coredns", options.configure_coredns,
               "Kubernetes mode: keep server blocks forwarding the mesh domains to --dns-service "
               "in CoreDNS's ConfigMap (--coredns-configmap)");
  app.add_option("--coredns-configmap", options.coredns_configmap,
                 "NAMESPACE/NAME of CoreDNS's ConfigMap (kube-system/coredns)");
  app.add_option("--dns-service", options.dns_service,
                 "the operator's Service, in --namespace, that CoreDNS forwards to (its ClusterIP, "
                 "port dns-udp)");
  app.add_option("--release", options.release,
                 "the Helm release named by the CoreDNS marker lines (default: --dns-service)");
  CLI::App* coredns =
      app.add_subcommand("coredns", "Kubernetes: change CoreDNS's configuration once, then exit");
  coredns
      ->add_flag("--remove", options.coredns_remove,
                 "remove this release's server blocks (the chart's uninstall hook)")
      ->required();
  coredns->fallthrough();  // --namespace, --dns-service, ... may follow the subcommand
  std::string delete_mesh_wait = "60s";
  CLI::App* delete_mesh = app.add_subcommand(
      "delete-mesh",
      "Kubernetes: delete a Mesh and wait for the operator to remove its members, then exit (the "
      "chart's uninstall hook); without a running operator, remove its finalizer");
  delete_mesh->add_option("name", options.delete_mesh, "the Mesh")->required();
  delete_mesh->add_option("--wait", delete_mesh_wait,
                          "how long to wait for the operator (60s; 1s to 10m)");
  delete_mesh->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (const auto& [flag, text, out] :
       {std::tuple{"--ip-quarantine", &ip_quarantine, &options.ip_quarantine},
        std::tuple{"--member-expiry", &member_expiry, &options.member_expiry}}) {
    if (!absl::ParseDuration(*text, out) || *out < absl::ZeroDuration()) {
      std::fprintf(stderr, "tunnelmesh-operator: %s \"%s\" is not a duration (e.g. 30m, 24h, 0s)\n",
                   flag, text->c_str());
      return 2;
    }
  }
  if (!absl::ParseDuration(psk_rollover_step, &options.psk_rollover_step) ||
      options.psk_rollover_step < tunnelmesh::kMinPskRolloverStep ||
      options.psk_rollover_step > tunnelmesh::kMaxPskRolloverStep) {
    std::fprintf(stderr,
                 "tunnelmesh-operator: --psk-rollover-step \"%s\" is not a duration from 2s to "
                 "24h: every member must get each step of a rollover before the next one\n",
                 psk_rollover_step.c_str());
    return 2;
  }
  if (!absl::ParseDuration(delete_mesh_wait, &options.delete_mesh_wait) ||
      options.delete_mesh_wait < absl::Seconds(1) || options.delete_mesh_wait > absl::Minutes(10)) {
    std::fprintf(
        stderr, "tunnelmesh-operator: delete-mesh --wait \"%s\" is not a duration from 1s to 10m\n",
        delete_mesh_wait.c_str());
    return 2;
  }
  return tunnelmesh::Run(options);
}
