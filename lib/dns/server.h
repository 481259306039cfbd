// DnsServer: lib/dns's zones and responder on UDP and TCP sockets, for both binaries: the agent's
// resolver for its mesh zone (on its mesh IPs and a loopback address, port 53 by default, answering
// from the zone its control thread builds from its own network map, so that names keep resolving
// while the coordinator is down) and the operator's central server (operator/dns: one zone per
// Mesh, each with its own domain and reverse zones). The first published zone that covers a
// question answers it (dns::RespondFromZones); questions outside every zone are REFUSED, or
// relayed to an upstream resolver when one is configured (the agent's `--dns-upstream`, so that a
// laptop can use the agent as its only resolver): over UDP for UDP clients (a truncated answer
// goes back truncated, and the client asks again over TCP), over a TCP connection of its own for
// TCP clients.
//
// Threads and ownership: one thread ("tm-dns") owns every socket, the TCP connections and the
// table of forwarded queries, and runs a poll loop over them; it never blocks on one peer (TCP is
// read and written without blocking, the upstream answers asynchronously). UDP queries are read
// and answered in batches (recvmmsg/sendmmsg). Zones are immutable and published as one set
// (SetZones), which the thread takes per batch without waiting for the publisher; SetZones,
// SetZone, zones() and the counters are safe from any thread. Everything is bounded: TCP
// connections (kMaxTcpConnections, idle ones closed after kTcpIdleTimeout), queries waiting for
// the upstream over UDP or TCP together (kMaxPendingForwards, dropped after kForwardTimeout: the
// client retries). When accept runs out of descriptors, TCP accepts pause for kAcceptPause
// (counted in accept_pauses) instead of spinning on the still-readable listener.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/base/snapshot.h"
#include "lib/dns/responder.h"
#include "lib/dns/zone.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

namespace dns {

// The zones a server answers from, immutable once published. Order matters only where two zones
// cover one name: the first answers.
using ZoneSet = std::vector<std::shared_ptr<const Zone>>;

// Respond (responder.h) with the first zone of `zones` that covers the query's question, or with
// none (REFUSED, or kForward) when no zone does. With one zone this decodes the query once; with
// several, once more to find the question. Pure: any thread.
Reply RespondFromZones(const ZoneSet& zones, absl::Span<const uint8_t> query, Transport transport,
                       bool can_forward);

}  // namespace dns

struct DnsServerOptions {
  // Each address is served on UDP and TCP `port` (0 picks a free one, for tests).
  std::vector<IpAddress> addresses;
  uint16_t port = 53;
  std::optional<Endpoint> upstream;
  // The flags that choose `addresses` and `port`, named when one cannot be bound.
  std::string address_flags = "--dns-listen or --dns-port";
};

class DnsServer {
 public:
  static constexpr size_t kMaxTcpConnections = 64;
  static constexpr size_t kMaxPendingForwards = 512;
  static constexpr std::chrono::seconds kTcpIdleTimeout{10};
  static constexpr std::chrono::seconds kForwardTimeout{3};
  // How long TCP accepts pause after accept failed for want of descriptors (EMFILE, ENFILE).
  static constexpr std::chrono::milliseconds kAcceptPause{100};

  // Binds every address (a busy or missing one is an error naming it and the flag to change) and
  // starts the thread. Port 0 takes one port that is free for UDP and TCP on every address.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<DnsServer>> Start(DnsServerOptions options);
  ~DnsServer();  // Stops the thread and closes everything.
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  // The zones answers come from now on (the previous set goes once no query uses it); an empty
  // set answers nothing from a zone (REFUSED, or forwarded). Any thread.
  void SetZones(dns::ZoneSet zones);
  // One zone, or none when null (the agent's case).
  void SetZone(std::shared_ptr<const dns::Zone> zone);
  // The set published last (for another front end answering from the same zones). Any thread.
  std::shared_ptr<const dns::ZoneSet> zones() const { return zones_.Load(); }

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
  // Times TCP accepts paused for kAcceptPause because accept ran out of descriptors.
  uint64_t accept_pauses() const { return accept_pauses_.load(std::memory_order_relaxed); }

 private:
  struct Loop;
  DnsServer();

  std::vector<Endpoint> endpoints_;
  Snapshot<dns::ZoneSet> zones_{std::make_shared<const dns::ZoneSet>()};
  std::array<std::atomic<uint64_t>, dns::kOutcomeCount> outcomes_{};
  std::atomic<uint64_t> truncated_{0};
  std::atomic<uint64_t> tcp_refused_{0};
  std::atomic<uint64_t> forward_failures_{0};
  std::atomic<uint64_t> accept_pauses_{0};
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace tunnelmesh
