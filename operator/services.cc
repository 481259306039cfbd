#include "operator/services.h"

#include "lib/base/file.h"
#include "lib/base/log.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

Coordinator::Options BaseCoordinatorOptions(const OperatorOptions& options,
                                            const SecretKey& relay_key, RelayRevoker* revoker) {
  // Members substitute the host they dialed when these carry only a port.
  const std::string host = options.advertise_address;
  Coordinator::Options c;
  c.stun_address = host + ":" + std::to_string(options.stun_port);
  c.relay_url = "ws://" + host + ":" + std::to_string(options.relay_port) + "/relay";
  c.relay_public_key = DerivePublicKey(relay_key);
  c.on_member_removed = [revoker](const PublicKey& key) {
    if (RelayServer* relay = revoker->relay.load()) relay->Revoke(key);
  };
  return c;
}

absl::StatusOr<Services> StartServices(const OperatorOptions& options, Coordinator* coordinator,
                                       const TlsIdentity& tls, const SecretKey& relay_key,
                                       RelayRevoker* revoker) {
  Services services;
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> grpc =
      CoordinatorServer::Start(coordinator, tls, options.listen_address, options.grpc_port);
  if (!grpc.ok()) return grpc.status();
  services.grpc = *std::move(grpc);
  StunServer::Options stun_options;
  stun_options.port = static_cast<uint16_t>(options.stun_port);
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(stun_options);
  if (!stun.ok()) return stun.status();
  services.stun = *std::move(stun);
  RelayServer::Options relay_options;
  relay_options.listen_address = options.listen_address;
  absl::StatusOr<std::unique_ptr<RelayServer>> relay = RelayServer::Start(
      options.relay_port, relay_key,
      [coordinator](const PublicKey& key) { return coordinator->IsMember(key); }, relay_options);
  if (!relay.ok()) return relay.status();
  services.relay = *std::move(relay);
  revoker->relay = services.relay.get();
  return services;
}

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
                        {"filter_updates_sent", c.filter_updates_sent.load()},
                        {"filter_recompiles", c.filter_recompiles.load()},
                        {"explain_requests", c.explain_requests.load()},
                        {"store_writes", c.store.writes.load()},
                        {"store_write_failures", c.store.failures.load()},
                        {"store_write_retries", c.store.retries.load()},
                        {"policies", coordinator.policy_count()}};
  const StunServerCounters& s = services.stun->counters();
  doc["stun"] = {{"requests", s.requests.load()},
                 {"responses", s.responses.load()},
                 {"error_responses", s.error_responses.load()},
                 {"malformed", s.malformed.load()},
                 {"ignored", s.ignored.load()}};
  const RelayCounters& r = services.relay->counters();
  doc["relay"] = {{"connections", r.connections.load()},
                  {"bad_upgrades", r.bad_upgrades.load()},
                  {"auth_failures", r.auth_failures.load()},
                  {"frames_relayed", r.frames_relayed.load()},
                  {"bytes_relayed", r.bytes_relayed.load()},
                  {"unknown_destination", r.unknown_destination.load()},
                  {"malformed", r.malformed.load()},
                  {"oversized", r.oversized.load()},
                  {"queue_overflow", r.queue_overflow.load()},
                  {"sessions", r.sessions.load()}};
  (void)WriteFileAtomically(state_dir + "/counters.json", doc.dump(2) + "\n", 0644);
}

void LogReady(const OperatorOptions& options, const Services& services, const std::string& ca_hash,
              size_t meshes, size_t members) {
  TM_LOG_INFO("coordinator ready: grpc_port={} stun_port={} relay_port={} meshes={} members={}",
              services.grpc->port(), options.stun_port, options.relay_port, meshes, members);
  TM_LOG_INFO("join with: tunnelmesh-agent join HOST:{} --token-file FILE --ca-hash {}",
              services.grpc->port(), ca_hash);
}

}  // namespace tunnelmesh
