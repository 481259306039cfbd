// EndpointReporter: this member's endpoint candidates and what to report of them to the
// coordinator (ARCHITECTURE.md, "Data flow" step 3). It sends STUN Binding requests (RFC 5389) from
// the data socket, takes the reflexive address from the matching response, combines it with the
// local interface addresses into the candidate list, and says when a report is due: after a new
// reflexive address, a change of the path to a peer (direct, SSH, relay or none), a
// (re-)registration, or a failed report.
//
// Threads: owned by the agent's control thread; not thread-safe, no locks. STUN responses reach it
// as copies posted by the data plane's inbound thread. The report RPC itself runs elsewhere (the
// coordinator session's RPC thread): TakeReport, then ReportDone with the outcome.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "lib/crypto/keys.h"
#include "lib/disco/path_selector.h"
#include "lib/net/ip.h"
#include "lib/wire/stun.h"
#include "node-agent/nat/path_transport.h"

namespace tunnelmesh {

// At most this many candidates are reported (what one CallMeMaybe can carry).
inline constexpr size_t kMaxReportedEndpoints = 16;
// At most this many per-peer paths are reported (the coordinator's bound); the counts cover all.
inline constexpr size_t kMaxReportedPaths = 1024;

// The path to one peer, as PathManager applied it.
struct ReportedPath {
  PublicKey peer;
  disco::PathKind kind = disco::PathKind::kNone;
  friend bool operator==(const ReportedPath&, const ReportedPath&) = default;
};

struct EndpointReport {
  std::vector<std::string> endpoints;
  uint32_t direct = 0;
  uint32_t relayed = 0;
  uint32_t ssh = 0;
  std::vector<ReportedPath> paths;  // by peer key, at most kMaxReportedPaths
};

class EndpointReporter {
 public:
  using TxIdGenerator = std::function<stun::TransactionId()>;

  // `transport` (only SendDatagram is used) must outlive the reporter. `tx_ids` is for tests; null
  // draws transaction ids from the OS CSPRNG (RFC 5389 section 6 wants them unguessable).
  explicit EndpointReporter(PathTransport* transport, TxIdGenerator tx_ids = nullptr);

  // Sends a Binding request to `server`; a response to an older request is ignored from now on.
  void SendStunRequest(const Endpoint& server);
  // A datagram for which stun::LooksLikeStun holds. Returns true when it gave a new reflexive
  // address (and marked the report dirty).
  bool OnStunDatagram(absl::Span<const uint8_t> datagram);
  const std::optional<Endpoint>& reflexive() const { return reflexive_; }

  // The path to each peer (sorted by key); a change makes a report due.
  void SetPaths(std::vector<ReportedPath> paths);
  // A restarted coordinator has forgotten our endpoints: report again.
  void MarkDirty() { dirty_ = true; }
  bool dirty() const { return dirty_; }

  // The report to send now: the reflexive address, then `local_addresses` at `port`, without
  // duplicates, at most kMaxReportedEndpoints. Clears the dirty flag (a change while the report is
  // in flight sets it again).
  EndpointReport TakeReport(absl::Span<const IpAddress> local_addresses, uint16_t port);
  // The outcome of sending `report`: on failure the report is due again.
  void ReportDone(const EndpointReport& report, bool ok);
  // The candidates the coordinator last accepted (what a call-me-maybe lists).
  const std::vector<std::string>& reported() const { return reported_; }

 private:
  PathTransport* const transport_;
  const TxIdGenerator tx_ids_;
  stun::TransactionId txid_{};
  bool stun_pending_ = false;
  std::optional<Endpoint> reflexive_;
  std::vector<ReportedPath> paths_;
  bool dirty_ = true;
  std::vector<std::string> reported_;
};

// The host's up, non-loopback, non-link-local interface addresses other than `own_interface`'s:
// the member's local endpoint candidates.
std::vector<IpAddress> LocalAddresses(const std::string& own_interface);

}  // namespace tunnelmesh
