// DnsServer: the agent's resolver for the mesh zone, over UDP and TCP on a few local addresses
// (its mesh IPs and a loopback address, port 53 by default). It answers from the zone the control
// thread last published (built from the agent's own network map, so names keep resolving while
// the coordinator is down) through lib/dns/responder.h; questions outside the zone are REFUSED, or
// relayed to an upstream resolver over UDP when one is configured (`--dns-upstream`), so a laptop
// can use the agent as its only resolver.
//
// Threads and ownership: one thread ("tm-dns") owns every socket, the TCP connections and the
// table of forwarded queries, and runs a poll loop over them; it never blocks on one peer (TCP is
// read and written without blocking, the upstream answers asynchronously). SetZone and the
// counters are safe from any thread. Everything is bounded: TCP connections (kMaxTcpConnections,
// idle ones closed after kTcpIdleTimeout), queries waiting for the upstream (kMaxPendingForwards,
// dropped after kForwardTimeout: the client retries).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/base/snapshot.h"
#include "lib/dns/responder.h"
#include "lib/dns/zone.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

struct DnsServerOptions {
  // Each address is served on UDP and TCP `port` (0 picks a free one, for tests).
  std::vector<IpAddress> addresses;
  uint16_t port = 53;
  std::optional<Endpoint> upstream;
};

class DnsServer {
 public:
  static constexpr size_t kMaxTcpConnections = 64;
  static constexpr size_t kMaxPendingForwards = 512;
  static constexpr std::chrono::seconds kTcpIdleTimeout{10};
  static constexpr std::chrono::seconds kForwardTimeout{3};

  // Binds every address (a busy or missing one is an error naming it and the flag to change) and
  // starts the thread.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<DnsServer>> Start(DnsServerOptions options);
  ~DnsServer();  // Stops the thread and closes everything.
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  // The zone answers come from now on; null answers nothing from a zone (REFUSED, or
  // forwarded). Any thread.
  void SetZone(std::shared_ptr<const dns::Zone> zone) { zone_.Store(std::move(zone)); }

  // Where it listens (with the port chosen when options.port was 0).
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }

  // Queries answered, by outcome (dns::Outcome), and what the server dropped.
  uint64_t queries(dns::Outcome outcome) const {
    return outcomes_[static_cast<size_t>(outcome)].load(std::memory_order_relaxed);
  }
  uint64_t truncated() const { return truncated_.load(std::memory_order_relaxed); }
  uint64_t tcp_refused() const { return tcp_refused_.load(std::memory_order_relaxed); }
  // Forwarded queries the upstream did not answer in time, or that could not be sent.
  uint64_t forward_failures() const { return forward_failures_.load(std::memory_order_relaxed); }

 private:
  struct Loop;
  DnsServer();

  std::vector<Endpoint> endpoints_;
  Snapshot<dns::Zone> zone_{nullptr};
  std::array<std::atomic<uint64_t>, dns::kOutcomeCount> outcomes_{};
  std::atomic<uint64_t> truncated_{0};
  std::atomic<uint64_t> tcp_refused_{0};
  std::atomic<uint64_t> forward_failures_{0};
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace tunnelmesh
