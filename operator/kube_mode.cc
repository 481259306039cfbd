#include "operator/kube_mode.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/time/time.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "operator/kube/config.h"
#include "operator/kube/events.h"
#include "operator/kube/http_api.h"
#include "operator/kube/leader.h"
#include "operator/kube/token_review.h"
#include "operator/reconcilers/coordinator_identity.h"
#include "operator/reconcilers/manager.h"
#include "operator/store/meshpeer_store.h"

namespace tunnelmesh {
namespace {

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

  kube::LeaderElector elector(api, lease);
  TM_LOG_INFO("waiting to lead: Lease {}/{} as {}", ns, options.lease_name, identity);
  if (absl::Status s = elector.Acquire(&stop); !s.ok()) return stop ? 0 : Fail(s.ToString());
  std::atomic<bool> lost{false};
  elector.StartRenewing([&lost] { lost = true; });
  TM_LOG_INFO("leading: Lease {}/{}", ns, options.lease_name);

  absl::StatusOr<CoordinatorIdentity> keys = LoadOrCreateIdentity(
      api, {ns, options.coordinator_secret, options.ca_configmap, options.state_dir});
  if (!keys.ok()) return Fail(std::string(keys.status().message()));

  KubeMemberStore store(api);
  // Events are about cluster-scoped objects, which core/v1 accepts only in namespace "default".
  kube::EventRecorder events(api, "tunnelmesh-operator", "default");
  RelayRevoker revoker;
  auto dns_changes = std::make_shared<ZoneChangeSignal>();
  Manager::Options manager_options;
  manager_options.coordinator =
      BaseCoordinatorOptions(options, keys->relay_key, &revoker, dns_changes);
  if (!agent_user.empty()) {
    manager_options.coordinator.agent_service_account = agent_user;
    manager_options.coordinator.review_token = [api](const std::string& token) {
      return kube::ReviewToken(api, token);
    };
  }
  if (!options.advertise_address.empty()) {
    manager_options.mesh.coordinator_endpoints = {options.advertise_address + ":" +
                                                  std::to_string(options.grpc_port)};
  }
  // Back off at most 2 s: after an API server outage, deletions (evictions) must take effect
  // quickly again; four informers retrying every 2 s cost the API server nothing.
  manager_options.watch.max_backoff = absl::Seconds(2);
  Manager manager(api, &events, &store, manager_options);
  if (!manager.Start(stop)) {
    elector.Release();  // Stopped before serving: let a standby take over at once.
    return 0;
  }
  Coordinator& coordinator = manager.coordinator();
  absl::StatusOr<Services> services =
      StartServices(options, &coordinator, keys->tls, keys->relay_key, &revoker, dns_changes);
  if (!services.ok()) return Fail(std::string(services.status().message()));
  (void)WriteFileAtomically(options.state_dir + "/ca-hash", keys->ca_hash + "\n", 0644);
  LogReady(options, *services, keys->ca_hash, manager.mesh_count(), coordinator.member_count());

  int exit_code = 0;
  while (!stop) {
    if (lost) {
      TM_LOG_ERROR("lost the Lease {}/{}: exiting so that only one operator acts", ns,
                   options.lease_name);
      exit_code = kExitFailure;
      break;
    }
    WriteCounters(options.state_dir, coordinator, *services);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  services->grpc->Shutdown();
  manager.Stop();
  if (exit_code == 0) elector.Release();
  return exit_code;
}

}  // namespace tunnelmesh
