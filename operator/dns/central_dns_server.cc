#include "operator/dns/central_dns_server.h"

#include <pthread.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "lib/base/log.h"
#include "operator/dns/dns_grpc_service.h"

namespace tunnelmesh {

void ZoneChangeSignal::Notify() {
  absl::MutexLock lock(&mu_);
  pending_ = true;
}

bool ZoneChangeSignal::Wait(absl::Time not_before) {
  absl::MutexLock lock(&mu_);
  auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ || stopped_; };
  mu_.Await(absl::Condition(&woken));
  // Too soon after the last rebuild: let more changes gather until `not_before` (Stop still ends
  // the wait at once).
  auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopped_; };
  mu_.AwaitWithDeadline(absl::Condition(&stopped), not_before);
  if (stopped_) return false;
  pending_ = false;
  return true;
}

void ZoneChangeSignal::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

CentralDnsServer::CentralDnsServer(Coordinator* coordinator,
                                   std::shared_ptr<ZoneChangeSignal> changes,
                                   CentralDnsOptions options)
    : coordinator_(coordinator), changes_(std::move(changes)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<CentralDnsServer>> CentralDnsServer::Start(
    Coordinator* coordinator, std::shared_ptr<ZoneChangeSignal> changes,
    CentralDnsOptions options) {
  if (coordinator == nullptr || changes == nullptr) {
    return absl::InvalidArgumentError("the central DNS server needs a coordinator and its signal");
  }
  std::unique_ptr<CentralDnsServer> central(
      new CentralDnsServer(coordinator, std::move(changes), std::move(options)));
  DnsServerOptions dns;
  dns.addresses = {central->options_.listen_address};
  dns.port = central->options_.port;
  dns.address_flags = "--listen-address or --dns-port";
  absl::StatusOr<std::unique_ptr<DnsServer>> server = DnsServer::Start(std::move(dns));
  if (!server.ok()) return server.status();
  central->server_ = *std::move(server);
  central->grpc_ = std::make_unique<DnsGrpcService>(central->server_.get());
  // The first zones before the first query, from the state the coordinator has now; changes
  // from here on set the signal, which the thread sees even if they came before it ran.
  central->Rebuild();
  CentralDnsServer* raw = central.get();
  central->thread_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "tm-dns-zones");
    raw->Run();
  });
  return central;
}

CentralDnsServer::~CentralDnsServer() {
  if (changes_ != nullptr) changes_->Stop();
  if (thread_.joinable()) thread_.join();
  // server_ (and its thread) goes after this, with the zones it was answering from.
}

grpc::Service* CentralDnsServer::grpc_service() { return grpc_.get(); }

void CentralDnsServer::Run() {
  absl::Time last = absl::Now();
  while (changes_->Wait(last + kMinRebuildInterval)) {
    Rebuild();
    last = absl::Now();
  }
}

void CentralDnsServer::Rebuild() {
  std::vector<MeshZoneInput> inputs = coordinator_->DnsZones();
  zone_checks_.fetch_add(1, std::memory_order_relaxed);
  std::vector<Built> next;
  next.reserve(inputs.size());
  dns::ZoneSet zones;
  bool changed = inputs.size() != built_.size();
  uint64_t version = 0;
  for (MeshZoneInput& input : inputs) {
    version = input.version;
    // Compared without the version: only content rebuilds a zone (and moves its serial).
    input.version = 0;
    input.server_label.clear();  // "ns"
    input.server_addresses = options_.server_addresses;
    Built built;
    const auto same = absl::c_find_if(built_, [&](const Built& b) { return b.input == input; });
    if (same != built_.end()) {
      built.zone = same->zone;
    } else {
      input.version = version;
      built.zone = BuildMeshZone(input);
      input.version = 0;
      zones_built_.fetch_add(1, std::memory_order_relaxed);
      const dns::Zone& z = *built.zone;
      TM_LOG_DEBUG("central DNS: zone {} serial {}: {} names", z.config().domain, z.serial(),
                   z.name_count());
      if (!z.skipped().empty()) {
        TM_LOG_WARN("central DNS: zone {} leaves out {}", z.config().domain,
                    absl::StrJoin(z.skipped(), ", "));
      }
    }
    built.input = std::move(input);
    changed = changed || zones.size() >= built_.size() || built_[zones.size()].zone != built.zone;
    zones.push_back(built.zone);
    next.push_back(std::move(built));
  }
  if (changed) {
    // Two Meshes with one domain: the first (by Mesh name, the order of DnsZones) answers.
    absl::flat_hash_set<std::string> domains;
    for (const std::shared_ptr<const dns::Zone>& z : zones) {
      const std::string domain = absl::AsciiStrToLower(z->config().domain);
      if (!domains.insert(domain).second) {
        TM_LOG_WARN(
            "central DNS: two Meshes use the domain {}: only the first by Mesh name is "
            "served; give each Mesh its own spec.domain",
            domain);
      }
    }
    server_->SetZones(std::move(zones));
    built_ = std::move(next);
  }
  checked_version_.store(version, std::memory_order_release);
}

CentralDnsStats CentralDnsServer::stats() const {
  CentralDnsStats s;
  for (int i = 0; i < dns::kOutcomeCount; ++i) {
    const auto outcome = static_cast<dns::Outcome>(i);
    s.queries[i] = server_->queries(outcome);
    s.grpc_queries[i] = grpc_->queries(outcome);
  }
  s.truncated = server_->truncated();
  s.tcp_refused = server_->tcp_refused();
  s.grpc_invalid = grpc_->invalid();
  s.zone_checks = zone_checks_.load(std::memory_order_relaxed);
  s.zones_built = zones_built_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace tunnelmesh
