// The operator's central DNS server: the mesh zones that the cluster's CoreDNS forwards the mesh
// domains to, one zone per Mesh (its domain, and the reverse zones of its address ranges) built
// from the coordinator's state. It answers plain DNS over UDP and TCP (lib/dns/server.h) and
// CoreDNS's gRPC DnsService (dns_grpc_service.h), which the operator registers on the coordinator's
// gRPC server. Questions outside every zone are REFUSED: there is no upstream here (CoreDNS sends
// only the mesh zones). The NS record of each zone names "ns.<domain>", with the server's
// advertised addresses as glue when it has any.
//
// Following the coordinator: its Options::on_change calls ZoneChangeSignal::Notify, which wakes
// this server's rebuild thread. The thread asks the coordinator for every mesh's zone input
// (Coordinator::DnsZones) and builds a zone only for a mesh whose input differs from the one its
// current zone was built from, the state version aside: endpoint reports move the version every
// few seconds without changing a name, so they neither rebuild zones nor move serials. A zone's
// SOA serial is thus the version of the last change to its own content (RFC 1982 serials only
// grow, as the version does). The zones are published together as one immutable set
// (DnsServer::SetZones): a query takes the set current when it arrives, and the previous set goes
// when its last query finishes, so nothing answers from a half-updated state and nothing waits.
//
// Threads and ownership: the rebuild thread ("tm-dns-zones") owns the built zones and the inputs
// they came from; the DnsServer's own thread owns the sockets; gRPC's threads run DnsService calls
// on the published set. Wakes coalesce: any number of Notify calls while a rebuild runs cause one
// more rebuild, and rebuilds start at least kMinRebuildInterval apart, so that a burst of changes
// (members re-registering after a restart) costs a bounded number of DnsZones calls, each a
// reader lock on the coordinator. Nothing here holds a lock while it calls the coordinator or
// builds a zone.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/dns/mesh_zone.h"
#include "lib/dns/server.h"
#include "lib/net/ip.h"
#include "operator/coordinator/coordinator.h"

namespace grpc {
class Service;
}

namespace tunnelmesh {

class DnsGrpcService;

// The central DNS server's default port (docs/ports.md), UDP and TCP: unprivileged, so the
// operator needs no CAP_NET_BIND_SERVICE; the chart's Service maps port 53 to it.
inline constexpr uint16_t kDefaultDnsPort = 7753;

// Wakes the central server's rebuild thread when the coordinator's state changed. The coordinator's
// Options (with on_change) are fixed before the server can start, so the signal is made first and
// shared: the on_change hook and the server each hold it, and either may go first at shutdown.
// One server per signal.
class ZoneChangeSignal {
 public:
  // Any thread, e.g. Coordinator::Options::on_change: sets a flag under a lock nobody holds for
  // long, and returns.
  void Notify() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class CentralDnsServer;
  // Blocks until Notify has been called since the last return (and not before `not_before`), or
  // Stop. False when stopped.
  bool Wait(absl::Time not_before) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every Wait, now and later.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

struct CentralDnsOptions {
  IpAddress listen_address;         // --listen-address (default 0.0.0.0)
  uint16_t port = kDefaultDnsPort;  // --dns-port; 0 picks a free port (tests).
  // Where members and CoreDNS reach this server: the glue of each zone's NS target "ns.<domain>".
  // Empty: the NS record has no glue.
  std::vector<IpAddress> server_addresses;
};

// What the server did, for the operator's counters file.
struct CentralDnsStats {
  // Queries over UDP and TCP, and over gRPC, by dns::Outcome.
  std::array<uint64_t, dns::kOutcomeCount> queries{};
  std::array<uint64_t, dns::kOutcomeCount> grpc_queries{};
  uint64_t truncated = 0;     // UDP answers cut to fit, with TC set.
  uint64_t tcp_refused = 0;   // TCP connections closed at once: kMaxTcpConnections reached.
  uint64_t grpc_invalid = 0;  // DnsService calls answered INVALID_ARGUMENT (not a DNS query).
  uint64_t zone_checks = 0;   // Times the rebuild thread compared the coordinator's state.
  uint64_t zones_built = 0;   // Zones built because a mesh's content changed (or appeared).
};

class CentralDnsServer {
 public:
  static constexpr absl::Duration kMinRebuildInterval = absl::Milliseconds(50);

  // Binds UDP and TCP (a busy port is an error naming --dns-port and --listen-address), builds
  // the zones of the coordinator's current state and starts the rebuild thread, which `changes`
  // wakes from then on. `coordinator` must outlive the server.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CentralDnsServer>> Start(
      Coordinator* coordinator, std::shared_ptr<ZoneChangeSignal> changes,
      CentralDnsOptions options);
  // Stops the rebuild thread, then the sockets. A gRPC server that registered grpc_service()
  // must have been shut down before.
  ~CentralDnsServer();
  CentralDnsServer(const CentralDnsServer&) = delete;
  CentralDnsServer& operator=(const CentralDnsServer&) = delete;

  // Where plain DNS is served (with the port chosen when options.port was 0).
  const std::vector<Endpoint>& endpoints() const { return server_->endpoints(); }
  // CoreDNS's DnsService over the same zones, for a gRPC server (ServerBuilder::RegisterService)
  // that this object outlives. Its calls run on gRPC's threads and never block.
  grpc::Service* grpc_service();
  // The coordinator state version the zones were last compared with (tests wait on it).
  uint64_t checked_version() const { return checked_version_.load(std::memory_order_acquire); }
  // The zones served now.
  std::shared_ptr<const dns::ZoneSet> zones() const { return server_->zones(); }
  // Any thread.
  CentralDnsStats stats() const;

 private:
  // A published zone and the input it was built from, with version 0 (to compare content).
  struct Built {
    MeshZoneInput input;
    std::shared_ptr<const dns::Zone> zone;
  };

  CentralDnsServer(Coordinator* coordinator, std::shared_ptr<ZoneChangeSignal> changes,
                   CentralDnsOptions options);
  // Brings the published zones in line with the coordinator's state. On the rebuild thread (and
  // once in Start, before it runs).
  void Rebuild();
  void Run();

  Coordinator* const coordinator_;
  const std::shared_ptr<ZoneChangeSignal> changes_;
  const CentralDnsOptions options_;
  std::unique_ptr<DnsServer> server_;
  std::unique_ptr<DnsGrpcService> grpc_;
  // Owned by the rebuild thread.
  std::vector<Built> built_;
  std::atomic<uint64_t> checked_version_{0};
  std::atomic<uint64_t> zone_checks_{0};
  std::atomic<uint64_t> zones_built_{0};
  std::thread thread_;
};

}  // namespace tunnelmesh
