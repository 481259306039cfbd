// tunnelmesh-operator: parses flags, wires the coordinator together, handles signals.
//   tunnelmesh-operator --standalone --manifests DIR --state-dir DIR [--grpc-port N] ...
//   tunnelmesh-operator [--kubeconfig FILE] --namespace NS ...   (Kubernetes: in a pod, or outside
//                                                                  with a kubeconfig)
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <cstdio>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/grpc_service.h"
#include "operator/coordinator/manifests.h"
#include "operator/coordinator/state_store.h"
#include "operator/kube/client.h"
#include "operator/kube/config.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/kube/leader.h"
#include "operator/kube/resource.h"
#include "operator/reconcilers/coordinator_identity.h"
#include "operator/reconcilers/mesh_reconciler.h"
#include "operator/reconcilers/meshpeer_reconciler.h"
#include "operator/reconcilers/meshpeer_store.h"
#include "operator/reconcilers/node_gc.h"
#include "operator/reconcilers/policy_reconciler.h"
#include "operator/reconcilers/status_writer.h"
#ifdef TM_HAVE_STUN
#include "operator/stun/stun_server.h"
#endif
#ifdef TM_HAVE_RELAY
#include "operator/relay/relay_server.h"
#endif

namespace tunnelmesh {
namespace {

// Distinct defaults for every listener (docs/ports.md): the agent's data port is 51820.
constexpr int kDefaultGrpcPort = 7700;
constexpr int kDefaultRelayPort = 7701;
constexpr int kDefaultStunPort = 3478;

struct Options {
  bool standalone = false;
  std::string manifests;
  std::string state_dir;
  std::string listen_address = "0.0.0.0";
  std::string advertise_address;
  int grpc_port = kDefaultGrpcPort;
  int stun_port = kDefaultStunPort;
  int relay_port = kDefaultRelayPort;
  std::string log_level = "info";
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
};

int Usage(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return 2;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return 1;
}

// The listeners every mode runs: coordinator gRPC (TLS), STUN and the WebSocket relay.
struct Services {
  std::unique_ptr<CoordinatorServer> grpc;
#ifdef TM_HAVE_STUN
  std::unique_ptr<StunServer> stun;
#endif
#ifdef TM_HAVE_RELAY
  std::unique_ptr<RelayServer> relay;
#endif
};

// The relay, once it runs: members that leave or are evicted lose their relay session.
struct RelayRevoker {
#ifdef TM_HAVE_RELAY
  std::atomic<RelayServer*> relay{nullptr};
#endif
};

Coordinator::Options CoordinatorOptions(const Options& options, const SecretKey& relay_key,
                                        RelayRevoker* revoker) {
  // Members substitute the host they dialed when these carry only a port.
  const std::string host = options.advertise_address;
  Coordinator::Options c;
  c.stun_address = host + ":" + std::to_string(options.stun_port);
  c.relay_url = "ws://" + host + ":" + std::to_string(options.relay_port) + "/relay";
#ifdef TM_HAVE_RELAY
  c.relay_public_key = DerivePublicKey(relay_key);
  c.on_member_removed = [revoker](const PublicKey& key) {
    if (RelayServer* relay = revoker->relay.load()) relay->Revoke(key);
  };
#else
  (void)relay_key;
  (void)revoker;
#endif
  return c;
}

absl::StatusOr<Services> StartServices(const Options& options, Coordinator* coordinator,
                                       const TlsIdentity& tls, const SecretKey& relay_key) {
  Services services;
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> grpc =
      CoordinatorServer::Start(coordinator, tls, options.listen_address, options.grpc_port);
  if (!grpc.ok()) return grpc.status();
  services.grpc = *std::move(grpc);
#ifdef TM_HAVE_STUN
  StunServer::Options stun_options;
  stun_options.port = static_cast<uint16_t>(options.stun_port);
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(stun_options);
  if (!stun.ok()) return stun.status();
  services.stun = *std::move(stun);
#endif
#ifdef TM_HAVE_RELAY
  RelayServer::Options relay_options;
  relay_options.listen_address = options.listen_address;
  absl::StatusOr<std::unique_ptr<RelayServer>> relay = RelayServer::Start(
      options.relay_port, relay_key,
      [coordinator](const PublicKey& key) { return coordinator->IsMember(key); }, relay_options);
  if (!relay.ok()) return relay.status();
  services.relay = *std::move(relay);
#else
  (void)relay_key;
#endif
  return services;
}

void ConnectRevoker(RelayRevoker* revoker, const Services& services) {
#ifdef TM_HAVE_RELAY
  revoker->relay = services.relay.get();
#else
  (void)revoker;
  (void)services;
#endif
}

// Counters of every service, rewritten each second to STATE_DIR/counters.json for operators and
// tests: rejected joins, malformed requests, garbage on the STUN and relay ports.
void WriteCounters(const std::string& state_dir, Coordinator& coordinator,
                   const Services& services) {
  const CoordinatorCounters& c = coordinator.counters();
  nlohmann::json doc;
  doc["coordinator"] = {{"members", coordinator.member_count()},
                        {"registrations", c.registrations.load()},
                        {"rejected_tokens", c.rejected_tokens.load()},
                        {"malformed_requests", c.malformed_requests.load()},
                        {"unauthenticated_calls", c.unauthenticated_calls.load()},
                        {"updates_sent", c.updates_sent.load()},
                        {"watch_collapses", c.watch_collapses.load()},
                        {"store_writes", c.store.writes.load()},
                        {"store_write_failures", c.store.failures.load()},
                        {"store_write_retries", c.store.retries.load()},
                        {"policies", coordinator.policy_count()}};
#ifdef TM_HAVE_STUN
  const StunServerCounters& s = services.stun->counters();
  doc["stun"] = {{"requests", s.requests.load()}, {"responses", s.responses.load()},
                 {"error_responses", s.error_responses.load()}, {"malformed", s.malformed.load()},
                 {"ignored", s.ignored.load()}};
#endif
#ifdef TM_HAVE_RELAY
  const RelayCounters& r = services.relay->counters();
  doc["relay"] = {{"connections", r.connections.load()}, {"bad_upgrades", r.bad_upgrades.load()},
                  {"auth_failures", r.auth_failures.load()},
                  {"frames_relayed", r.frames_relayed.load()},
                  {"bytes_relayed", r.bytes_relayed.load()},
                  {"unknown_destination", r.unknown_destination.load()},
                  {"malformed", r.malformed.load()}, {"oversized", r.oversized.load()},
                  {"queue_overflow", r.queue_overflow.load()}, {"sessions", r.sessions.load()}};
#endif
  (void)services;
  (void)WriteFileAtomically(state_dir + "/counters.json", doc.dump(2) + "\n", 0644);
}

void LogReady(const Options& options, const Services& services, const std::string& ca_hash,
              size_t meshes, size_t members) {
  TM_LOG_INFO("coordinator ready: grpc_port={} stun_port={} relay_port={} meshes={} members={}",
              services.grpc->port(), options.stun_port, options.relay_port, meshes, members);
  TM_LOG_INFO("join with: tunnelmesh-agent join HOST:{} --token-file FILE --ca-hash {}",
              services.grpc->port(), ca_hash);
}

// Waits up to 250 ms for SIGINT/SIGTERM; true when one arrived.
bool SignalArrived(const sigset_t& signals) {
  timespec timeout{0, 250'000'000};
  int sig = sigtimedwait(&signals, nullptr, &timeout);
  if (sig != SIGINT && sig != SIGTERM) return false;
  TM_LOG_INFO("signal {} received: shutting down", sig);
  return true;
}

int RunStandalone(const Options& options, const sigset_t& signals) {
  if (options.manifests.empty() || options.state_dir.empty()) {
    return Usage("--standalone needs --manifests DIR and --state-dir DIR");
  }
  absl::StatusOr<std::vector<MeshSpec>> meshes = LoadManifests(options.manifests);
  if (!meshes.ok()) return Usage(std::string(meshes.status().message()));
  if (meshes->empty()) {
    return Usage("--manifests " + options.manifests + " holds no Mesh (apiVersion "
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

  RelayRevoker revoker;
  Coordinator coordinator(store->get(), CoordinatorOptions(options, *relay_key, &revoker));
  coordinator.SetMeshes(*meshes);
  absl::StatusOr<Services> services = StartServices(options, &coordinator, *tls, *relay_key);
  if (!services.ok()) return Fail(std::string(services.status().message()));
  ConnectRevoker(&revoker, *services);
  if (absl::Status s = WriteFileAtomically(options.state_dir + "/ca-hash", *ca_hash + "\n", 0644);
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  LogReady(options, *services, *ca_hash, meshes->size(), coordinator.member_count());

  // Manifests: pick up added, changed and removed files within a second.
  auto next_counters = std::chrono::steady_clock::now();
  std::string fingerprint = ManifestFingerprint(options.manifests);
  while (true) {
    if (std::chrono::steady_clock::now() >= next_counters) {
      WriteCounters(options.state_dir, coordinator, *services);
      next_counters = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    if (SignalArrived(signals)) break;
    std::string now = ManifestFingerprint(options.manifests);
    if (now == fingerprint) continue;
    fingerprint = now;
    absl::StatusOr<std::vector<MeshSpec>> reloaded = LoadManifests(options.manifests);
    if (!reloaded.ok()) {
      TM_LOG_ERROR("manifests not applied, keeping the previous ones: {}",
                   std::string(reloaded.status().message()));
      continue;
    }
    coordinator.SetMeshes(*reloaded);
    TM_LOG_INFO("manifests reloaded: meshes={}", reloaded->size());
  }
  services->grpc->Shutdown();
  WriteCounters(options.state_dir, coordinator, *services);
  return 0;
}

// TokenReview: whose ServiceAccount token is this? The user name, or why not.
absl::StatusOr<std::string> ReviewToken(kube::Client* client, const std::string& token) {
  nlohmann::json review = {{"apiVersion", "authentication.k8s.io/v1"},
                           {"kind", "TokenReview"},
                           {"spec", {{"token", token}}}};
  absl::StatusOr<nlohmann::json> answer = client->Create(kube::kTokenReviews, "", review);
  if (!answer.ok()) {
    return absl::UnavailableError("checking the ServiceAccount token with the API server: " +
                                  std::string(answer.status().message()));
  }
  const nlohmann::json& status = Field(*answer, "status");
  if (!Field(status, "authenticated").is_boolean() || !Field(status, "authenticated").get<bool>()) {
    const std::string error = kube::StringAt(status, "error");
    return absl::UnauthenticatedError("the API server did not accept the ServiceAccount token" +
                                      (error.empty() ? std::string() : ": " + error));
  }
  const std::string name = kube::StringAt(Field(status, "user"), "username");
  if (name.empty()) return absl::UnauthenticatedError("the TokenReview named no user");
  return name;
}

// Polls `ready` until it holds; false when the process is told to stop first.
bool WaitFor(const std::function<bool()>& ready, const std::atomic<bool>& stop) {
  while (!ready()) {
    if (stop) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
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

int RunKubernetes(Options options, const sigset_t& signals) {
  absl::StatusOr<kube::ClusterConfig> config = kube::ResolveClusterConfig(options.kubeconfig);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  const std::string ns =
      FirstNonEmpty({options.namespace_name, Env("POD_NAMESPACE"), config->namespace_name});
  if (ns.empty()) {
    return Usage("--namespace is required: the operator's namespace (its Lease, keys Secret and "
                 "CA ConfigMap live there)");
  }
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  const std::string identity = FirstNonEmpty({options.identity, Env("POD_NAME"), hostname});
  std::string agent_user;
  if (!options.agent_service_account.empty()) {
    const size_t slash = options.agent_service_account.find('/');
    if (slash == std::string::npos || slash == 0 ||
        slash + 1 == options.agent_service_account.size()) {
      return Usage("--agent-service-account \"" + options.agent_service_account +
                   "\" must be NAMESPACE/NAME");
    }
    agent_user = "system:serviceaccount:" + options.agent_service_account.substr(0, slash) + ":" +
                 options.agent_service_account.substr(slash + 1);
  }
  if (options.state_dir.empty()) options.state_dir = "/tmp/tunnelmesh-operator";
  absl::StatusOr<std::unique_ptr<kube::Client>> client = kube::Client::Create(*config);
  if (!client.ok()) return Usage(std::string(client.status().message()));
  kube::Client* api = client->get();

  // SIGINT/SIGTERM set `stop` from their own thread, so that every wait below can end.
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    while (!done && !stop) stop = SignalArrived(signals);
  });
  struct Joiner {
    std::atomic<bool>& done;
    std::thread& thread;
    ~Joiner() {
      done = true;
      thread.join();
    }
  } joiner{done, signal_thread};

  kube::LeaderElector::Options lease{.ns = ns, .lease_name = options.lease_name,
                                    .identity = identity};
  if (!absl::ParseDuration(options.lease_duration, &lease.lease_duration) ||
      !absl::ParseDuration(options.renew_deadline, &lease.renew_deadline) ||
      lease.renew_deadline <= lease.retry_period ||
      lease.lease_duration <= lease.renew_deadline) {
    return Usage("--lease-duration \"" + options.lease_duration + "\" and --renew-deadline \"" +
                 options.renew_deadline + "\" must be durations such as 30s, with the lease "
                 "longer than the deadline and the deadline longer than 2s");
  }
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
  Coordinator::Options coordinator_options =
      CoordinatorOptions(options, keys->relay_key, &revoker);
  if (!agent_user.empty()) {
    coordinator_options.agent_service_account = agent_user;
    coordinator_options.review_token = [api](const std::string& token) {
      return ReviewToken(api, token);
    };
  }
  // Members of kind Node must name a Node (set before the gRPC server starts).
  const NodeGarbageCollector* nodes = nullptr;
  coordinator_options.node_exists = [&nodes](const std::string& name) {
    return nodes != nullptr && nodes->NodeExists(name);
  };
  Coordinator coordinator(&store, coordinator_options);
  NodeGarbageCollector node_gc(&coordinator);
  nodes = &node_gc;
  MeshPeerReconciler peers(api, &events, &coordinator);
  MeshReconciler::Options mesh_options;
  if (!options.advertise_address.empty()) {
    mesh_options.coordinator_endpoints = {options.advertise_address + ":" +
                                          std::to_string(options.grpc_port)};
  }
  // MeshPeers and PeerPolicies that named a Mesh which did not exist yet are checked again.
  PolicyReconciler* policies_ptr = nullptr;
  mesh_options.on_meshes_changed = [&peers, &policies_ptr] {
    peers.ResyncAll();
    if (policies_ptr != nullptr) policies_ptr->Reconcile();
  };
  MeshReconciler meshes(api, &events, &coordinator, mesh_options);

  // Meshes first (members need them), then the members, then Nodes and policies.
  // Back off at most 2 s: after an API server outage, deletions (evictions) must take effect
  // quickly again; four informers retrying every 2 s cost the API server nothing.
  kube::Informer::Options watch;
  watch.max_backoff = absl::Seconds(2);
  kube::Informer mesh_informer(api, kube::kMeshes, meshes.Handlers(), watch);
  meshes.set_informer(&mesh_informer);
  kube::Informer peer_informer(api, kube::kMeshPeers, peers.Handlers(), watch);
  peers.set_informer(&peer_informer);
  kube::Informer node_informer(api, kube::kNodes, node_gc.Handlers(), watch);
  node_gc.set_informer(&node_informer);
  PolicyReconciler policies(api, &events, &coordinator, &mesh_informer);
  kube::Informer policy_informer(api, kube::kPeerPolicies, policies.Handlers(), watch);
  policies.set_informer(&policy_informer);
  policies_ptr = &policies;
  for (kube::Informer* informer : {&mesh_informer, &peer_informer, &node_informer}) {
    informer->Start();
    if (!WaitFor([informer] { return informer->HasSynced(); }, stop)) {
      elector.Release();  // Stopped before serving: let a standby take over at once.
      return 0;
    }
  }
  policy_informer.Start();

  absl::StatusOr<Services> services =
      StartServices(options, &coordinator, keys->tls, keys->relay_key);
  if (!services.ok()) return Fail(std::string(services.status().message()));
  ConnectRevoker(&revoker, *services);
  (void)WriteFileAtomically(options.state_dir + "/ca-hash", keys->ca_hash + "\n", 0644);
  LogReady(options, *services, keys->ca_hash, meshes.mesh_count(), coordinator.member_count());

  int exit_code = 0;
  auto next_resync = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!stop) {
    if (lost) {
      TM_LOG_ERROR("lost the Lease {}/{}: exiting so that only one operator acts", ns,
                   options.lease_name);
      exit_code = 1;
      break;
    }
    // Status where it changed; the Secrets of every Mesh re-read now and then (token rotation).
    peers.WriteStatus();
    meshes.WriteStatus();
    policies.WriteStatus();
    if (std::chrono::steady_clock::now() >= next_resync) {
      meshes.Reconcile();
      next_resync = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    }
    WriteCounters(options.state_dir, coordinator, *services);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  services->grpc->Shutdown();
  for (kube::Informer* informer :
       {&policy_informer, &node_informer, &peer_informer, &mesh_informer}) {
    informer->Stop();
  }
  if (exit_code == 0) elector.Release();
  return exit_code;
}

int Run(const Options& options) {
  if (!InitLogging(options.log_level)) {
    return Usage("--log-level \"" + options.log_level +
                 "\" is not one of trace, debug, info, warn, error");
  }
  InitCrypto();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return options.standalone ? RunStandalone(options, signals) : RunKubernetes(options, signals);
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  tunnelmesh::Options options;
  CLI::App app{"tunnelmesh-operator: the TunnelMesh coordinator (gRPC, STUN, relay)"};
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
  app.add_option("--relay-port", options.relay_port, "WebSocket relay port (7701)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
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
  app.add_option("--agent-service-account", options.agent_service_account,
                 "NAMESPACE/NAME of the ServiceAccount whose tokens may join (TokenReview)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return tunnelmesh::Run(options);
}
