#include "operator/services.h"

#include <utility>
#include <vector>

#include "lib/base/file.h"
#include "lib/base/log.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {
namespace {

// "[::1]" -> "::1": --listen-address and --advertise-address may be written either way.
std::string Unbracketed(const std::string& address) {
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    return address.substr(1, address.size() - 2);
  }
  return address;
}

absl::StatusOr<CentralDnsOptions> DnsOptionsFrom(const OperatorOptions& options) {
  CentralDnsOptions dns;
  if (options.dns_port < 0 || options.dns_port > 65535) {
    return absl::InvalidArgumentError("--dns-port " + std::to_string(options.dns_port) +
                                      " is not a port number (0-65535; --no-dns turns the "
                                      "central DNS server off)");
  }
  dns.port = static_cast<uint16_t>(options.dns_port);
  absl::StatusOr<IpAddress> listen = IpAddress::Parse(Unbracketed(options.listen_address));
  if (!listen.ok()) {
    return absl::InvalidArgumentError("--listen-address \"" + options.listen_address +
                                      "\" is not an IP address (the DNS server binds it)");
  }
  dns.listen_address = *listen;
  // The NS record's glue: where the server is reached. A host name in --advertise-address gives
  // none (a name cannot be glue); a wildcard listen address says nothing either.
  if (absl::StatusOr<IpAddress> advertised =
          IpAddress::Parse(Unbracketed(options.advertise_address));
      advertised.ok()) {
    dns.server_addresses.push_back(*advertised);
  } else if (*listen != IpAddress() && *listen != IpAddress::Parse("::").value()) {
    dns.server_addresses.push_back(*listen);
  }
  return dns;
}

}  // namespace

Coordinator::Options BaseCoordinatorOptions(const OperatorOptions& options,
                                            const SecretKey& relay_key, RelayRevoker* revoker,
                                            std::shared_ptr<ZoneChangeSignal> dns_changes) {
  // Members substitute the host they dialed when these carry only a port.
  const std::string host = options.advertise_address;
  Coordinator::Options c;
  c.stun_address = host + ":" + std::to_string(options.stun_port);
  c.relay_url = "wss://" + host + ":" + std::to_string(options.relay_port) + "/relay";
  c.relay_public_key = DerivePublicKey(relay_key);
  c.quarantine = options.ip_quarantine;
  c.member_expiry = options.member_expiry;
  c.psk_rollover_step = options.psk_rollover_step;
  c.registrations_per_source = {.rate = options.register_rate, .burst = 4 * options.register_rate};
  c.hellos_per_source = {.rate = 2 * options.register_rate, .burst = 8 * options.register_rate};
  c.on_member_removed = [revoker](const PublicKey& key) {
    if (RelayServer* relay = revoker->relay.load()) relay->Revoke(key);
  };
  c.on_member_moved = [revoker](const PublicKey& key) {
    if (RelayServer* relay = revoker->relay.load()) relay->Rescope(key);
  };
  if (!options.no_dns && dns_changes != nullptr) {
    c.on_change = [dns_changes = std::move(dns_changes)] { dns_changes->Notify(); };
  }
  return c;
}

absl::StatusOr<Services> StartServices(const OperatorOptions& options, Coordinator* coordinator,
                                       const TlsIdentity& tls, const SecretKey& relay_key,
                                       RelayRevoker* revoker,
                                       std::shared_ptr<ZoneChangeSignal> dns_changes) {
  Services services;
  std::vector<grpc::Service*> more_grpc;
  if (!options.no_dns) {
    absl::StatusOr<CentralDnsOptions> dns_options = DnsOptionsFrom(options);
    if (!dns_options.ok()) return dns_options.status();
    absl::StatusOr<std::unique_ptr<CentralDnsServer>> dns =
        CentralDnsServer::Start(coordinator, std::move(dns_changes), *std::move(dns_options));
    if (!dns.ok()) return dns.status();
    services.dns = *std::move(dns);
    // No authentication on DnsService: the mesh's names are public within it, as on the DNS port.
    more_grpc.push_back(services.dns->grpc_service());
  }
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> grpc = CoordinatorServer::Start(
      coordinator, tls, options.listen_address, options.grpc_port, more_grpc);
  if (!grpc.ok()) return grpc.status();
  services.grpc = *std::move(grpc);
  // Recovers the port if gRPC stops accepting (descriptor exhaustion; grpc_service.h). Its thread
  // belongs to the CoordinatorServer and ends in its Shutdown.
  services.grpc->StartWatchdog({});
  StunServer::Options stun_options;
  stun_options.port = static_cast<uint16_t>(options.stun_port);
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(stun_options);
  if (!stun.ok()) return stun.status();
  services.stun = *std::move(stun);
  RelayServer::Options relay_options;
  relay_options.listen_address = options.listen_address;
  relay_options.max_connections = options.relay_max_connections;
  relay_options.max_connections_per_source = options.relay_max_connections_per_source;
  relay_options.max_pending_connections = options.relay_max_pending_connections;
  absl::StatusOr<std::unique_ptr<RelayServer>> relay = RelayServer::Start(
      options.relay_port, relay_key, tls,
      [coordinator](const PublicKey& key) { return coordinator->MeshOf(key); }, relay_options);
  if (!relay.ok()) return relay.status();
  services.relay = *std::move(relay);
  revoker->relay = services.relay.get();
  return services;
}

void WriteCounters(const std::string& state_dir, Coordinator& coordinator,
                   const Services& services) {
  const CoordinatorCounters& c = coordinator.counters();
  nlohmann::json doc;
  doc["coordinator"] = {
      {"members", coordinator.member_count()},
      {"registrations", c.registrations.load()},
      {"rejected_tokens", c.rejected_tokens.load()},
      {"malformed_requests", c.malformed_requests.load()},
      {"unauthenticated_calls", c.unauthenticated_calls.load()},
      {"updates_sent", c.updates_sent.load()},
      {"watch_collapses", c.watch_collapses.load()},
      {"filter_updates_sent", c.filter_updates_sent.load()},
      {"filter_recompiles", c.filter_recompiles.load()},
      {"explain_requests", c.explain_requests.load()},
      {"hellos", c.hellos.load()},
      {"refused_proofs", c.refused_proofs.load()},
      {"refused_token_cap", c.refused_token_cap.load()},
      {"rate_limited", c.rate_limited.load()},
      {"call_me_maybe_endpoints_dropped", c.call_me_maybe_endpoints_dropped.load()},
      {"expired_members", c.expired_members.load()},
      {"psk_rollover_steps", c.psk_rollover_steps.load()},
      {"psk_save_failures", c.psk_save_failures.load()},
      {"watch_takeovers", c.watch_takeovers.load()},
      {"duplicate_key_warnings", c.duplicate_key_warnings.load()},
      {"admin_removals", c.admin_removals.load()},
      {"refused_removed_keys", c.refused_removed_keys.load()},
      {"refused_joins", coordinator.refused_joins().total()},
      {"store_writes", c.store.writes.load()},
      {"store_write_failures", c.store.failures.load()},
      {"store_write_retries", c.store.retries.load()},
      {"policies", coordinator.policy_count()}};
  const ListenerWatchdogCounters& w = services.grpc->watchdog_counters();
  doc["grpc_watchdog"] = {{"checks", w.checks.load()},
                          {"failed_checks", w.failed_checks.load()},
                          {"descriptor_waits", w.descriptor_waits.load()},
                          {"restarts", w.restarts.load()},
                          {"restart_failures", w.restart_failures.load()}};
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
                  {"budget_overflow", r.budget_overflow.load()},
                  {"cross_mesh", r.cross_mesh.load()},
                  {"rescoped", r.rescoped.load()},
                  {"bad_payload", r.bad_payload.load()},
                  {"rate_limited", r.rate_limited.load()},
                  {"refused_total_cap", r.refused_total_cap.load()},
                  {"refused_source_cap", r.refused_source_cap.load()},
                  {"refused_pending_cap", r.refused_pending_cap.load()},
                  {"plaintext_refused", r.plaintext_refused.load()},
                  {"tls_failures", r.tls_failures.load()},
                  {"sessions", r.sessions.load()}};
  if (services.dns != nullptr) {
    const CentralDnsStats d = services.dns->stats();
    nlohmann::json queries = nlohmann::json::object();
    nlohmann::json grpc_queries = nlohmann::json::object();
    for (int i = 0; i < dns::kOutcomeCount; ++i) {
      const char* outcome = dns::OutcomeName(static_cast<dns::Outcome>(i));
      queries[outcome] = d.queries[i];
      grpc_queries[outcome] = d.grpc_queries[i];
    }
    doc["dns"] = {{"queries", queries},
                  {"grpc_queries", grpc_queries},
                  {"truncated", d.truncated},
                  {"tcp_refused", d.tcp_refused},
                  {"grpc_invalid", d.grpc_invalid},
                  {"zone_checks", d.zone_checks},
                  {"zones_built", d.zones_built}};
  }
  (void)WriteFileAtomically(state_dir + "/counters.json", doc.dump(2) + "\n", 0644);
}

absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> StartMetricsServer(
    const OperatorOptions& options, const OperatorMetrics* metrics) {
  if (options.no_metrics) {
    if (!options.metrics_address.empty()) {
      return absl::InvalidArgumentError(
          "--metrics-address and --no-metrics contradict each other: give one of them");
    }
    return nullptr;
  }
  const std::string address = options.metrics_address.empty()
                                  ? "127.0.0.1:" + std::to_string(kDefaultOperatorMetricsPort)
                                  : options.metrics_address;
  absl::StatusOr<Endpoint> endpoint = metrics::ParseListenAddress(address, "--metrics-address");
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server = metrics::MetricsServer::Start(
      *endpoint, "--metrics-address", "--no-metrics",
      [metrics] { return std::optional<std::string>(metrics->Render()); });
  if (!server.ok()) {
    // Not a usage error: the flag may be right and the port taken.
    return absl::UnavailableError(std::string(server.status().message()));
  }
  TM_LOG_INFO("metrics on http://{}/metrics", (*server)->endpoint().ToString());
  return server;
}

OperatorMetricsSources MetricsSourcesOf(Coordinator* coordinator, const Services& services) {
  OperatorMetricsSources sources;
  sources.coordinator = coordinator;
  sources.grpc = services.grpc.get();
  sources.relay = services.relay.get();
  sources.stun = services.stun.get();
  sources.dns = services.dns.get();
  return sources;
}

void LogReady(const OperatorOptions& options, const Services& services, const std::string& ca_hash,
              size_t meshes, size_t members) {
  TM_LOG_INFO(
      "coordinator ready: grpc_port={} stun_port={} relay_port={} dns_port={} meshes={} "
      "members={}",
      services.grpc->port(), options.stun_port, options.relay_port,
      services.dns != nullptr ? std::to_string(services.dns->endpoints()[0].port()) : "off", meshes,
      members);
  if (services.dns != nullptr) {
    TM_LOG_INFO("central DNS on {} (UDP and TCP) and coredns.dns.DnsService on gRPC port {}",
                services.dns->endpoints()[0].ToString(), services.grpc->port());
  }
  // With several meshes the token picks its mesh; --mesh only when meshes share a token.
  TM_LOG_INFO("join with: tunnelmesh-agent join HOST:{} --token-file FILE --ca-hash {}{}",
              services.grpc->port(), ca_hash,
              meshes > 1 ? " [--mesh NAME] (several meshes: a join token admits to its own mesh; "
                           "--mesh picks one when meshes share a token)"
                         : "");
}

}  // namespace tunnelmesh
