#include "operator/kube_mode.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/time/time.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "nlohmann/json.hpp"
#include "operator/coordinator/psk_store.h"
#include "operator/dns/coredns_config_reconciler.h"
#include "operator/kube/config.h"
#include "operator/kube/events.h"
#include "operator/kube/http_api.h"
#include "operator/kube/leader.h"
#include "operator/kube/resource.h"
#include "operator/kube/token_review.h"
#include "operator/kube/work_queue.h"
#include "operator/reconcilers/coordinator_identity.h"
#include "operator/reconcilers/manager.h"
#include "operator/reconcilers/mesh_reconciler.h"
#include "operator/reconcilers/psk_secret_store.h"
#include "operator/store/meshpeer_store.h"
#include "tm_version.h"

namespace tunnelmesh {
namespace {

// Errors of the API server that may pass (busy, restarting) rather than refusals.
bool Transient(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kUnknown ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

std::string FirstNonEmpty(std::initializer_list<std::string> values) {
  for (const std::string& v : values) {
    if (!v.empty()) return v;
  }
  return "";
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// A Helm release name as the marker lines may carry it: lower-case letters, digits, '-' and '.'.
bool IsReleaseName(const std::string& name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

// The CoreDNS flags of an operator in namespace `ns`; errors name the flag.
absl::StatusOr<CorednsTarget> CorednsTargetOf(const OperatorOptions& options,
                                              const std::string& ns) {
  CorednsTarget target;
  const size_t slash = options.coredns_configmap.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == options.coredns_configmap.size() ||
      options.coredns_configmap.find('/', slash + 1) != std::string::npos) {
    return absl::InvalidArgumentError("--coredns-configmap \"" + options.coredns_configmap +
                                      "\" is not NAMESPACE/NAME (e.g. kube-system/coredns)");
  }
  target.configmap_namespace = options.coredns_configmap.substr(0, slash);
  target.configmap_name = options.coredns_configmap.substr(slash + 1);
  if (options.dns_service.empty()) {
    return absl::InvalidArgumentError(
        "--dns-service is required with --configure-coredns and `coredns --remove`: the "
        "operator's Service, which CoreDNS forwards the mesh domains to (the chart's is named "
        "like the release)");
  }
  const std::string release = options.release.empty() ? options.dns_service : options.release;
  if (!IsReleaseName(release)) {
    return absl::InvalidArgumentError("--release \"" + release +
                                      "\" is not a Helm release name (lower-case letters, digits, "
                                      "'-' and '.', at most 63)");
  }
  target.release = ns + "/" + release;
  target.service_namespace = ns;
  target.service_name = options.dns_service;
  return target;
}

// --label-pod: the operator's own pod carries tunnelmesh.io/role, "standby" from the start and
// "leader" once this replica leads and serves. The chart's Service selects role=leader, so that
// every replica is Ready (its process runs) while members reach only the leader; a replica that
// restarts after losing the Lease labels itself standby again before anything else.
absl::Status LabelPodRole(kube::Api* api, const std::string& ns, const std::string& pod,
                          const char* role, const std::atomic<bool>& stop) {
  const nlohmann::json patch = {{"metadata", {{"labels", {{"tunnelmesh.io/role", role}}}}}};
  // The API server may still be out of reach when the pod starts: a minute of tries, 1 s apart.
  absl::Status last;
  for (int attempt = 0; attempt < 60 && !stop; ++attempt) {
    absl::StatusOr<nlohmann::json> patched = api->Patch(kube::kPods, ns, pod, patch);
    if (patched.ok()) {
      TM_LOG_INFO("pod {}/{} labelled tunnelmesh.io/role={}", ns, pod, role);
      return absl::OkStatus();
    }
    last = patched.status();
    if (last.code() == absl::StatusCode::kPermissionDenied ||
        last.code() == absl::StatusCode::kNotFound) {
      break;
    }
    if (attempt == 0) {
      TM_LOG_WARN("labelling pod {}/{}: {} (trying again)", ns, pod, std::string(last.message()));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return absl::Status(last.code(), "cannot label pod " + ns + "/" + pod + " tunnelmesh.io/role=" +
                                       role + " (--label-pod): " + std::string(last.message()) +
                                       "; the operator's Role needs patch on pods");
}

std::vector<coredns::MeshZones> MeshZonesOf(const std::vector<MeshZoneInput>& zones) {
  std::vector<coredns::MeshZones> out;
  for (const MeshZoneInput& zone : zones) out.push_back({zone.domain, zone.ranges});
  return out;
}

}  // namespace

int RunKubernetesMode(OperatorOptions options, const std::atomic<bool>& stop) {
  absl::StatusOr<kube::ClusterConfig> config = kube::ResolveClusterConfig(options.kubeconfig);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  const std::string ns =
      FirstNonEmpty({options.namespace_name, Env("POD_NAMESPACE"), config->namespace_name});
  if (ns.empty()) {
    return Usage(
        "--namespace is required: the operator's namespace (its Lease, keys Secret and "
        "CA ConfigMap live there)");
  }
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  const std::string identity = FirstNonEmpty({options.identity, Env("POD_NAME"), hostname});
  std::string agent_user;
  if (!options.agent_service_account.empty()) {
    absl::StatusOr<std::string> user =
        kube::ServiceAccountUser(options.agent_service_account, "--agent-service-account");
    if (!user.ok()) return Usage(std::string(user.status().message()));
    agent_user = *user;
  }
  if (options.state_dir.empty()) options.state_dir = "/tmp/tunnelmesh-operator";
  std::optional<CorednsTarget> coredns_target;
  if (options.configure_coredns) {
    absl::StatusOr<CorednsTarget> target = CorednsTargetOf(options, ns);
    if (!target.ok()) return Usage(std::string(target.status().message()));
    coredns_target = *target;
    if (options.no_dns) {
      TM_LOG_WARN(
          "--configure-coredns with --no-dns: CoreDNS will forward the mesh domains to "
          "Service {} while this operator serves no DNS",
          options.dns_service);
    }
  }
  kube::LeaderElector::Options lease{
      .ns = ns, .lease_name = options.lease_name, .identity = identity};
  if (!absl::ParseDuration(options.lease_duration, &lease.lease_duration) ||
      !absl::ParseDuration(options.renew_deadline, &lease.renew_deadline) ||
      lease.renew_deadline <= lease.retry_period || lease.lease_duration <= lease.renew_deadline) {
    return Usage("--lease-duration \"" + options.lease_duration + "\" and --renew-deadline \"" +
                 options.renew_deadline +
                 "\" must be durations such as 30s, with the lease longer than the deadline and "
                 "the deadline longer than 2s");
  }
  absl::StatusOr<std::unique_ptr<kube::HttpApi>> http = kube::HttpApi::Create(*config);
  if (!http.ok()) return Usage(std::string(http.status().message()));
  kube::Api* api = http->get();

  // Metrics before the election: a standby reports that it does not lead.
  OperatorMetrics operator_metrics(kTunnelMeshVersion);
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      StartMetricsServer(options, &operator_metrics);
  if (!metrics_server.ok()) return FailStart(metrics_server.status());
  if (!options.label_pod.empty()) {
    if (absl::Status s = LabelPodRole(api, ns, options.label_pod, "standby", stop); !s.ok()) {
      return stop ? 0 : Fail(std::string(s.message()));
    }
  }

  kube::LeaderElector elector(api, lease);
  TM_LOG_INFO("waiting to lead: Lease {}/{} as {}", ns, options.lease_name, identity);
  if (absl::Status s = elector.Acquire(&stop); !s.ok()) return stop ? 0 : Fail(s.ToString());
  std::atomic<bool> lost{false};
  elector.StartRenewing([&lost] { lost = true; });
  TM_LOG_INFO("leading: Lease {}/{}", ns, options.lease_name);
  operator_metrics.SetLeader(true);

  absl::StatusOr<CoordinatorIdentity> keys = LoadOrCreateIdentity(
      api, {ns, options.coordinator_secret, options.ca_configmap, options.state_dir});
  if (!keys.ok()) return Fail(std::string(keys.status().message()));
  // The meshes' preshared keys share the keys Secret (psk.<mesh> entries, which
  // LoadOrCreateIdentity keeps). A damaged entry stops the start here, naming it, rather than
  // giving that mesh a new key.
  SecretPresharedKeyStore psk_store(api, ns, options.coordinator_secret);
  if (absl::StatusOr<PresharedKeyRecords> psks = psk_store.Load(); !psks.ok()) {
    return Fail(std::string(psks.status().message()));
  }
  // So does the IP/name quarantine (the "quarantine" entry): read before any member is served.
  KubeMemberStore store(api, {ns, options.coordinator_secret});
  if (absl::Status s = store.LoadQuarantine(); !s.ok()) return Fail(std::string(s.message()));

  // Events are about cluster-scoped objects, which core/v1 accepts only in namespace "default".
  kube::EventRecorder events(api, "tunnelmesh-operator", "default");
  RelayRevoker revoker;
  auto dns_changes = std::make_shared<ZoneChangeSignal>();
  Manager::Options manager_options;
  manager_options.coordinator =
      BaseCoordinatorOptions(options, keys->relay_key, &revoker, dns_changes);
  manager_options.coordinator.ca_hash = keys->ca_hash;
  manager_options.coordinator.psk_store = &psk_store;
  if (!agent_user.empty()) {
    manager_options.coordinator.agent_service_account = agent_user;
    // Reviews are cached by the token's hash for 30 s and limited to 10 a second, so that
    // Registers with made-up tokens cannot flood the API server (token_review.h).
    auto reviews = std::make_shared<kube::TokenReviewCache>(
        [api](const std::string& token) {
          return kube::ReviewBoundToken(api, token, {kServiceAccountTokenAudience});
        },
        kube::TokenReviewCache::Options{});
    manager_options.coordinator.review_token =
        [reviews](const std::string& token) -> absl::StatusOr<ServiceAccountToken> {
      absl::StatusOr<kube::ReviewedToken> reviewed = reviews->Review(token);
      if (!reviewed.ok()) return reviewed.status();
      return ServiceAccountToken{reviewed->user, reviewed->audiences, reviewed->node};
    };
  }
  if (!options.advertise_address.empty()) {
    manager_options.mesh.coordinator_endpoints = {options.advertise_address + ":" +
                                                  std::to_string(options.grpc_port)};
  }
  // Back off at most 2 s: after an API server outage, deletions (evictions) must take effect
  // quickly again; four informers retrying every 2 s cost the API server nothing.
  manager_options.watch.max_backoff = absl::Seconds(2);
  // CoreDNS follows the meshes: a change of the served meshes queues its one key.
  kube::WorkQueue coredns_queue;
  std::string coredns_key;
  if (coredns_target) {
    coredns_key = coredns_target->configmap_namespace + "/" + coredns_target->configmap_name;
    manager_options.mesh.on_meshes_changed = [&coredns_queue, coredns_key] {
      coredns_queue.Add(coredns_key);
    };
  }
  Manager manager(api, &events, &store, manager_options);
  if (!manager.Start(stop)) {
    elector.Release();  // Stopped before serving: let a standby take over at once.
    return 0;
  }
  Coordinator& coordinator = manager.coordinator();
  std::unique_ptr<CorednsConfigReconciler> coredns;
  std::unique_ptr<Controller> coredns_controller;
  if (coredns_target) {
    coredns = std::make_unique<CorednsConfigReconciler>(
        api, &events, &manager.mesh_informer(),
        [&coordinator] { return MeshZonesOf(coordinator.DnsZones()); },
        CorednsConfigReconciler::Options{.target = *coredns_target});
    coredns_queue.Add(coredns_key);
    coredns_controller = std::make_unique<Controller>("CoreDNS", &coredns_queue, coredns.get());
    coredns_controller->Start();
    TM_LOG_INFO("CoreDNS: keeping the server blocks of release {} in ConfigMap {}",
                coredns_target->release, coredns_key);
  }
  absl::StatusOr<Services> services =
      StartServices(options, &coordinator, keys->tls, keys->relay_key, &revoker, dns_changes);
  if (!services.ok()) return Fail(std::string(services.status().message()));
  OperatorMetricsSources sources = MetricsSourcesOf(&coordinator, *services);
  sources.controllers = manager.controllers();
  if (coredns_controller) sources.controllers.push_back(coredns_controller.get());
  operator_metrics.Attach(std::move(sources));
  // Every return from here on detaches the sources before they are destroyed.
  absl::Cleanup detach_metrics = [&operator_metrics] { operator_metrics.Detach(); };
  (void)WriteFileAtomically(options.state_dir + "/ca-hash", keys->ca_hash + "\n", 0644);
  LogReady(options, *services, keys->ca_hash, manager.mesh_count(), coordinator.member_count());
  if (!options.label_pod.empty()) {
    if (absl::Status s = LabelPodRole(api, ns, options.label_pod, "leader", stop); !s.ok()) {
      services->grpc->Shutdown();
      manager.Stop();
      elector.Release();
      return stop ? 0 : Fail(std::string(s.message()));
    }
  }

  int exit_code = 0;
  while (!stop) {
    if (lost) {
      operator_metrics.SetLeader(false);
      TM_LOG_ERROR("lost the Lease {}/{}: exiting so that only one operator acts", ns,
                   options.lease_name);
      exit_code = kExitFailure;
      break;
    }
    coordinator.ExpireIdle(absl::Now());
    WriteCounters(options.state_dir, coordinator, *services);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  services->grpc->Shutdown();
  if (coredns_controller) coredns_controller->Stop();
  manager.Stop();
  if (exit_code == 0) elector.Release();
  return exit_code;
}

int RunCorednsRemoval(const OperatorOptions& options) {
  absl::StatusOr<kube::ClusterConfig> config = kube::ResolveClusterConfig(options.kubeconfig);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  const std::string ns =
      FirstNonEmpty({options.namespace_name, Env("POD_NAMESPACE"), config->namespace_name});
  if (ns.empty()) return Usage("--namespace is required: the operator's namespace");
  absl::StatusOr<CorednsTarget> target = CorednsTargetOf(options, ns);
  if (!target.ok()) return Usage(std::string(target.status().message()));
  absl::StatusOr<std::unique_ptr<kube::HttpApi>> http = kube::HttpApi::Create(*config);
  if (!http.ok()) return Usage(std::string(http.status().message()));
  // The API server may be busy or restarting during an uninstall: errors that may pass are tried
  // again for a minute; a refusal (RBAC) or broken markers are not.
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (true) {
    absl::Status s = RemoveCorednsConfig(http->get(), *target);
    if (s.ok()) return 0;
    if (!Transient(s) || absl::Now() > deadline) {
      return Fail("removing the CoreDNS server blocks of release " + target->release + ": " +
                  std::string(s.message()));
    }
    TM_LOG_WARN("removing the CoreDNS server blocks: {} (trying again)", std::string(s.message()));
    absl::SleepFor(absl::Seconds(1));
  }
}

namespace {

// Polls until Mesh `name` is gone or `deadline`; true when it is gone.
bool WaitMeshGone(kube::Api* api, const std::string& name, absl::Time deadline) {
  while (absl::Now() < deadline) {
    absl::StatusOr<nlohmann::json> mesh = api->Get(kube::kMeshes, "", name);
    if (absl::IsNotFound(mesh.status())) return true;
    absl::SleepFor(absl::Milliseconds(500));
  }
  return false;
}

}  // namespace

int RunMeshDeletion(const OperatorOptions& options) {
  const std::string& name = options.delete_mesh;
  const absl::Duration wait = options.delete_mesh_wait;
  absl::StatusOr<kube::ClusterConfig> config = kube::ResolveClusterConfig(options.kubeconfig);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  absl::StatusOr<std::unique_ptr<kube::HttpApi>> http = kube::HttpApi::Create(*config);
  if (!http.ok()) return Usage(std::string(http.status().message()));
  kube::Api* api = http->get();
  // As for CoreDNS: errors that may pass are tried again for a minute.
  const absl::Time retry_until = absl::Now() + absl::Minutes(1);
  while (true) {
    absl::Status s = api->Delete(kube::kMeshes, "", name);
    if (absl::IsNotFound(s)) {
      TM_LOG_INFO("Mesh {} does not exist: nothing to delete", name);
      return 0;
    }
    if (s.ok()) break;
    if (!Transient(s) || absl::Now() > retry_until) {
      return Fail("deleting Mesh " + name + ": " + std::string(s.message()));
    }
    TM_LOG_WARN("deleting Mesh {}: {} (trying again)", name, std::string(s.message()));
    absl::SleepFor(absl::Seconds(1));
  }
  // The running operator removes the members, then its finalizer.
  if (WaitMeshGone(api, name, absl::Now() + wait)) {
    TM_LOG_INFO("Mesh {} deleted; the operator removed its members", name);
    return 0;
  }
  // No operator finalized it (none runs, or none leads): without this the Mesh would stay
  // Terminating for ever, and `helm uninstall --wait` with it.
  TM_LOG_WARN(
      "Mesh {} was not finalized within {}: no operator removed its members. Removing the "
      "finalizer {}; the Mesh's MeshPeers stay (delete them with kubectl)",
      name, absl::FormatDuration(wait), kMeshFinalizer);
  for (int attempt = 0; attempt < 10; ++attempt) {
    absl::StatusOr<nlohmann::json> mesh = api->Get(kube::kMeshes, "", name);
    if (absl::IsNotFound(mesh.status())) return 0;
    if (!mesh.ok()) {
      if (!Transient(mesh.status())) {
        return Fail("reading Mesh " + name + ": " + std::string(mesh.status().message()));
      }
      absl::SleepFor(absl::Seconds(1));
      continue;
    }
    absl::Status s = RemoveMeshFinalizer(api, *mesh);
    if (s.ok() || absl::IsNotFound(s)) break;
    if (!kube::IsConflict(s) && !Transient(s)) return Fail(std::string(s.message()));
  }
  if (WaitMeshGone(api, name, absl::Now() + absl::Seconds(10))) return 0;
  return Fail("Mesh " + name + " is still there after its finalizer was removed");
}

}  // namespace tunnelmesh
