// ExitSelector: which exit peer a member routes its internet traffic through, and when to move to
// the next one (docs/remote-access.md, "Failover"). Sans-IO: the agent feeds it the coordinator's
// list (ExitConfig.use_public_keys, most preferred first), the peers' presence and per-second
// samples of their WireGuard counters, with the time; it answers which exit is active and why each
// candidate is or is not healthy.
//
// A candidate is healthy unless one of these holds:
// - it is not a peer in the network map;
// - the coordinator says its agent is offline (a killed agent's watch stream ends at once);
// - this member sent it packets (or handshake initiations) and nothing authenticated came back,
//   and no direct path answered, within kExitAnswerTimeout (a host that vanished without closing
//   its stream). This verdict holds until the peer shows life again: a packet or handshake from it,
//   its agent coming back online after the coordinator said offline, or kExitRetryAfter has passed.
// The active exit is the first healthy candidate in preference order, so a preferred exit that
// recovers takes over again.
//
// Threads: owned by the agent's control thread; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {

// How long packets sent to the active exit may go unanswered before it counts as dead. Longer than
// a handshake's round trip over the relay, shorter than WireGuard's REKEY_TIMEOUT retries.
inline constexpr absl::Duration kExitAnswerTimeout = absl::Seconds(3);
// How long an exit found dead by the data plane stays out unless it shows life before.
inline constexpr absl::Duration kExitRetryAfter = absl::Seconds(60);
// How long an exit whose agent came back (offline, then online) waits before it carries traffic
// again, unless it answers before: the restarted agent registers before it has applied the map,
// and a handshake sent to it then would be dropped and retried only after REKEY_TIMEOUT (5 s).
inline constexpr absl::Duration kExitSettle = absl::Seconds(2);
// How long packets to the active exit may go without an authenticated answer before the agent
// starts a new handshake (WireGuard itself waits KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, 15 s).
inline constexpr absl::Duration kExitRehandshakeAfter = absl::Seconds(1);

// One second's counters of a candidate (noise::PeerStats).
struct ExitSample {
  uint64_t tx_packets = 0;
  uint64_t rx_packets = 0;
  uint64_t handshakes_initiated = 0;
  uint64_t handshakes_completed = 0;
  // A direct path to the peer is confirmed now (its pongs answer within disco::kPathTimeout): the
  // peer is alive even when the traffic sent to it is one-way.
  bool direct_path = false;
};

struct ExitCandidateView {
  PublicKey key;
  bool healthy = false;
  bool active = false;
  std::string reason;  // Why not healthy (empty when healthy).
};

class ExitSelector {
 public:
  // The coordinator's list, most preferred first. Candidates no longer listed are forgotten.
  void SetCandidates(std::vector<PublicKey> keys);
  // Whether `key` is a peer of the network map now (a candidate that is not cannot carry traffic).
  void SetInMap(const PublicKey& key, bool in_map);
  // The coordinator's presence for `key`, received at `now`.
  void SetPresence(const PublicKey& key, bool online, absl::Time now);
  // A sample of `key`'s counters at `now` (the first is its baseline).
  void Sample(const PublicKey& key, const ExitSample& sample, absl::Time now);
  // Re-decides the active exit at `now`; true when it changed.
  bool Update(absl::Time now);

  std::optional<PublicKey> active() const { return active_; }
  // Whether packets sent to `key` got no authenticated answer (a direct path does not count here)
  // for kExitRehandshakeAfter: its session may be one a restarted agent forgot, and a new
  // handshake is due.
  bool NeedsHandshake(const PublicKey& key, absl::Time now) const;
  const std::vector<PublicKey>& candidates() const { return order_; }
  std::vector<ExitCandidateView> View(absl::Time now) const;
  // How often the active exit changed because one failed or recovered.
  uint64_t switches() const { return switches_; }

 private:
  struct State {
    bool in_map = false;
    bool presence_known = false;
    bool online = true;
    bool sampled = false;
    ExitSample last;
    // The first send since the last answer (InfinitePast: none pending).
    absl::Time unanswered_since = absl::InfinitePast();
    // The same, counting only authenticated packets and handshakes as answers.
    absl::Time silent_since = absl::InfinitePast();
    // Found dead by the data plane at this time (InfinitePast: not).
    absl::Time dead_since = absl::InfinitePast();
    // Its agent came back online at this time and has not answered since (InfinitePast: not).
    absl::Time back_since = absl::InfinitePast();
  };
  // Empty when healthy.
  std::string Unhealthy(const State& state, absl::Time now) const;

  std::vector<PublicKey> order_;
  std::map<PublicKey, State> states_;
  std::optional<PublicKey> active_;
  uint64_t switches_ = 0;
};

}  // namespace tunnelmesh
