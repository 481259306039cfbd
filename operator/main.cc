// tunnelmesh-operator: parses flags, wires the coordinator together, handles signals.
//   tunnelmesh-operator --standalone --manifests DIR --state-dir DIR [--grpc-port N] ...
// Kubernetes mode (in-cluster or --kubeconfig) comes with the operator's API client.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "lib/base/log.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/grpc_service.h"
#include "operator/coordinator/manifests.h"
#include "operator/coordinator/state_store.h"
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
};

// The relay's own key (it authenticates members and they pin it from the network map), kept in the
// state directory so that it survives restarts.
absl::StatusOr<SecretKey> LoadOrCreateRelayKey(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (in >> text) {
    absl::StatusOr<SecretKey> key = SecretKey::FromBase64(text);
    if (!key.ok()) return absl::DataLossError(path + " does not hold a key: move it away");
    return key;
  }
  SecretKey key = SecretKey::GeneratePrivate();
  absl::Status s = WriteFileAtomically(path, key.ToBase64() + "\n", 0600);
  if (!s.ok()) return s;
  return key;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return 2;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return 1;
}

int Run(const Options& options) {
  if (!InitLogging(options.log_level)) {
    return Usage("--log-level \"" + options.log_level +
                 "\" is not one of trace, debug, info, warn, error");
  }
  if (!options.standalone) {
    return Usage("Kubernetes mode is not implemented yet: run with --standalone --manifests DIR "
                 "--state-dir DIR");
  }
  if (options.manifests.empty() || options.state_dir.empty()) {
    return Usage("--standalone needs --manifests DIR and --state-dir DIR");
  }
  InitCrypto();
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

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Members substitute the host they dialed when these carry only a port.
  const std::string host = options.advertise_address;
  Coordinator::Options coordinator_options;
  coordinator_options.stun_address = host + ":" + std::to_string(options.stun_port);
  coordinator_options.relay_url =
      "ws://" + host + ":" + std::to_string(options.relay_port) + "/relay";

#ifdef TM_HAVE_RELAY
  absl::StatusOr<SecretKey> relay_key = LoadOrCreateRelayKey(options.state_dir + "/relay.key");
  if (!relay_key.ok()) return Fail(std::string(relay_key.status().message()));
  coordinator_options.relay_public_key = DerivePublicKey(*relay_key);
#endif
  Coordinator coordinator(store->get(), coordinator_options);
  coordinator.SetMeshes(*meshes);

  absl::StatusOr<std::unique_ptr<CoordinatorServer>> grpc_server =
      CoordinatorServer::Start(&coordinator, *tls, options.listen_address, options.grpc_port);
  if (!grpc_server.ok()) return Fail(std::string(grpc_server.status().message()));
#ifdef TM_HAVE_STUN
  StunServer::Options stun_options;
  stun_options.port = static_cast<uint16_t>(options.stun_port);
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(stun_options);
  if (!stun.ok()) return Fail(std::string(stun.status().message()));
#endif
#ifdef TM_HAVE_RELAY
  RelayServer::Options relay_options;
  relay_options.listen_address = options.listen_address;
  absl::StatusOr<std::unique_ptr<RelayServer>> relay = RelayServer::Start(
      options.relay_port, *relay_key,
      [&coordinator](const PublicKey& key) { return coordinator.IsMember(key); }, relay_options);
  if (!relay.ok()) return Fail(std::string(relay.status().message()));
#endif
  if (absl::Status s = WriteFileAtomically(options.state_dir + "/ca-hash", *ca_hash + "\n", 0644);
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  TM_LOG_INFO("coordinator ready: grpc_port={} stun_port={} relay_port={} meshes={} members={}",
              (*grpc_server)->port(), options.stun_port, options.relay_port, meshes->size(),
              coordinator.member_count());
  TM_LOG_INFO("join with: tunnelmesh-agent join HOST:{} --token-file FILE --ca-hash {}",
              (*grpc_server)->port(), *ca_hash);

  // Counters of every service, rewritten each second to STATE_DIR/counters.json for operators and
  // tests: rejected joins, malformed requests, garbage on the STUN and relay ports.
  auto write_counters = [&] {
    const CoordinatorCounters& c = coordinator.counters();
    nlohmann::json doc;
    doc["coordinator"] = {{"members", coordinator.member_count()},
                          {"registrations", c.registrations.load()},
                          {"rejected_tokens", c.rejected_tokens.load()},
                          {"malformed_requests", c.malformed_requests.load()},
                          {"unauthenticated_calls", c.unauthenticated_calls.load()},
                          {"updates_sent", c.updates_sent.load()}};
#ifdef TM_HAVE_STUN
    const StunServerCounters& s = (*stun)->counters();
    doc["stun"] = {{"requests", s.requests.load()}, {"responses", s.responses.load()},
                   {"error_responses", s.error_responses.load()}, {"malformed", s.malformed.load()},
                   {"ignored", s.ignored.load()}};
#endif
#ifdef TM_HAVE_RELAY
    const RelayCounters& r = (*relay)->counters();
    doc["relay"] = {{"connections", r.connections.load()}, {"bad_upgrades", r.bad_upgrades.load()},
                    {"auth_failures", r.auth_failures.load()},
                    {"frames_relayed", r.frames_relayed.load()},
                    {"bytes_relayed", r.bytes_relayed.load()},
                    {"unknown_destination", r.unknown_destination.load()},
                    {"malformed", r.malformed.load()}, {"oversized", r.oversized.load()},
                    {"queue_overflow", r.queue_overflow.load()}, {"sessions", r.sessions.load()}};
#endif
    (void)WriteFileAtomically(options.state_dir + "/counters.json", doc.dump(2) + "\n", 0644);
  };
  auto next_counters = std::chrono::steady_clock::now();

  // Manifests: pick up added, changed and removed files within a second.
  std::string fingerprint = ManifestFingerprint(options.manifests);
  while (true) {
    if (std::chrono::steady_clock::now() >= next_counters) {
      write_counters();
      next_counters = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    timespec timeout{0, 250'000'000};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      TM_LOG_INFO("signal {} received: shutting down", sig);
      break;
    }
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
  (*grpc_server)->Shutdown();
  write_counters();
  return 0;
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  tunnelmesh::Options options;
  CLI::App app{"tunnelmesh-operator: the TunnelMesh coordinator (gRPC, STUN, relay)"};
  app.add_flag("--standalone", options.standalone,
               "run without Kubernetes, from manifests in a directory");
  app.add_option("--manifests", options.manifests, "directory of Mesh and Secret YAML files");
  app.add_option("--state-dir", options.state_dir, "directory for members, TLS keys and state");
  app.add_option("--listen-address", options.listen_address, "address to listen on (0.0.0.0)");
  app.add_option("--advertise-address", options.advertise_address,
                 "host members use for STUN and the relay (default: the host they dialed)");
  app.add_option("--grpc-port", options.grpc_port, "coordinator gRPC port (7700)");
  app.add_option("--stun-port", options.stun_port, "STUN port (3478)");
  app.add_option("--relay-port", options.relay_port, "WebSocket relay port (7701)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return tunnelmesh::Run(options);
}
