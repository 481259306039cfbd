// PathSelector decides, for one peer, which path carries traffic: a direct UDP endpoint, the SSH
// connection to the peer, or the relay, in that order of preference (ARCHITECTURE.md, "Data flow"
// step 4; docs/protocol.md, "SSH path"). It is sans-IO: the agent feeds it the peer's
// candidate endpoints, the relay's availability, received pongs, pings and authenticated direct
// packets, and the time; it answers with pings to send, whether to send a call-me-maybe, and the
// current path.
//
// Policy:
// - Relay first: traffic uses the relay while no direct path is confirmed, so it flows at once.
// - Probing: a probe round pings every candidate (from the network map and from the peer's latest
//   call-me-maybe). A round runs when new candidates appear, when the peer sends a call-me-maybe,
//   when a direct path is lost, and every kProbeIntervalMin while no direct path is confirmed,
//   doubling up to kProbeIntervalMax while nothing answers. Rounds the agent starts itself also ask
//   it to send a call-me-maybe through the coordinator, so that both sides ping at the same moment
//   and each side's outgoing ping opens its own NAT for the other's (hole punching).
// - Confirmation: only a pong that echoes an outstanding transaction id, from the endpoint that
//   ping went to, within kPingTimeout, confirms a direct path. Among answering endpoints the
//   lowest round-trip time wins, with hysteresis (kSwitchMinGain*) against flapping.
// - Liveness: on a direct path, a heartbeat ping goes out every kHeartbeatInterval; a matching pong
//   or an authenticated WireGuard packet from that endpoint keeps it alive. After kPathTimeout
//   without either, traffic falls back to the relay and probing starts again to re-upgrade.
// - Hints: a ping from the peer, or a WireGuard packet from an endpoint that is not the current
//   path, is answered with one ping to that endpoint (at most once per kHintPingSpacing per
//   endpoint), so a path the peer just opened is confirmed within one round trip. Hints never
//   confirm a path by themselves.
//
// Thread-compatible: one PathSelector per peer, guarded by the agent (calls must not overlap).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "lib/base/clock.h"
#include "lib/disco/message.h"
#include "lib/net/ip.h"

namespace tunnelmesh::disco {

// Heartbeat period on a direct path. Within the 250-500 ms range the design asks for: three
// heartbeats fit in one kPathTimeout, so one or two lost pongs never cause a fallback, while the
// cost stays at about three 91-byte pings (and pongs) per second per direct peer.
inline constexpr Duration kHeartbeatInterval = std::chrono::milliseconds(300);
// A direct path with no pong and no authenticated direct packet for this long is dead, and traffic
// falls back to the relay. The issue requires fallback "within about a second". It also bounds the
// usable round-trip time: a path whose RTT exceeds about 700 ms (this minus one heartbeat
// interval) cannot keep itself alive, and such a path is worse than most relays anyway.
inline constexpr Duration kPathTimeout = std::chrono::seconds(1);
// First interval between probe rounds while no direct path is confirmed: short enough that a
// punched hole (NATs keep UDP mappings for 30 s or more, RFC 4787 REQ-5 asks for 2 min) is found
// again well before it closes, and that a transient loss during punching costs only seconds.
inline constexpr Duration kProbeIntervalMin = std::chrono::seconds(2);
// The interval doubles after every round nobody answered, up to this: a hopeless pair (both behind
// symmetric NATs) then costs one ping per candidate per 30 s, and new candidates or a
// call-me-maybe with new endpoints bring it back to kProbeIntervalMin.
inline constexpr Duration kProbeIntervalMax = std::chrono::seconds(30);
// A pong later than this is stale and ignored. Far above any round-trip time a usable path has
// (see kPathTimeout), and it bounds how long a transaction id is remembered.
inline constexpr Duration kPingTimeout = std::chrono::seconds(5);
// At most one call-me-maybe per this period. Rounds already come at least kProbeIntervalMin apart;
// this also covers bursts of candidate changes and a fallback right after a round. The peer probes
// every candidate on each one, so more would only multiply its pings.
inline constexpr Duration kCallMeMaybeMinInterval = std::chrono::seconds(1);
// At most one hint ping to an endpoint per this period: OnAuthenticatedDirectPacket runs for every
// data packet, and a lost hint ping is retried by the next packet after this long.
inline constexpr Duration kHintPingSpacing = std::chrono::seconds(1);
// Endpoints remembered for hint spacing. A peer normally sends from one or two endpoints; a
// replayed ping from many spoofed sources then makes us send at most this many pings per
// kHintPingSpacing.
inline constexpr size_t kHintSlots = 8;
// Outstanding transaction ids. A round pings at most 2 * kMaxCandidates endpoints and rounds are
// at least kProbeIntervalMin apart, so with kPingTimeout this holds every ping that can still be
// answered in practice; beyond it the oldest is forgotten (its pong becomes stale).
inline constexpr size_t kMaxOutstandingPings = 128;
// Candidates kept from each source (network map, call-me-maybe); the rest are ignored. Matches
// what one CallMeMaybe can carry, and bounds the pings of one round.
inline constexpr size_t kMaxCandidates = kMaxCallMeMaybeEndpoints;
// On a direct path, another endpoint that answers takes over only if its round-trip time is lower
// by at least 10% and by at least 1 ms. Measurements jitter; without both margins two near-equal
// paths (the IPv4 and IPv6 address of one LAN host) would trade places on every probe round.
inline constexpr int kSwitchMinGainPercent = 10;
inline constexpr Duration kSwitchMinGain = std::chrono::milliseconds(1);

enum class PathKind : uint8_t { kNone, kRelay, kDirect, kSsh };
// "none", "relay", "direct", "ssh": the words `tunnelmesh-agent status` prints.
const char* PathKindName(PathKind kind);

struct Path {
  PathKind kind = PathKind::kNone;
  Endpoint endpoint;  // Set only for kDirect.
  friend bool operator==(const Path&, const Path&) = default;
};

// A ping the agent should seal and send now to `endpoint` with this transaction id.
struct PingRequest {
  Endpoint endpoint;  // Unset when `ssh`.
  TxId tx_id{};
  bool ssh = false;  // Over the SSH connection to the peer instead of UDP.
  friend bool operator==(const PingRequest&, const PingRequest&) = default;
};

// What the selector asks the agent to do, accumulated since the last TakeActions.
struct PathActions {
  std::vector<PingRequest> pings;
  // Send a CallMeMaybe listing our own candidate endpoints to the peer through the coordinator.
  bool send_call_me_maybe = false;
  // Open an SSH connection to the peer (no-op if one exists or a dial is running).
  bool connect_ssh = false;
  bool empty() const { return pings.empty() && !send_call_me_maybe && !connect_ssh; }
};

// Counters for `status` and for tests.
struct PathStats {
  uint64_t pings_requested = 0;
  uint64_t pongs_accepted = 0;
  uint64_t pongs_ignored = 0;  // Unknown, answered, timed-out, or from the wrong endpoint.
  uint64_t probe_rounds = 0;
  uint64_t call_me_maybe_requested = 0;
  uint64_t call_me_maybe_received = 0;
  // Call-me-maybes within kCallMeMaybeMinInterval of the last one that started a round: their
  // endpoints are kept for the next round, but no round starts (no member can make us a packet
  // source faster than that).
  uint64_t call_me_maybe_deferred = 0;
  uint64_t hint_pings = 0;
  uint64_t upgrades = 0;       // Relay (or none) to direct.
  uint64_t switches = 0;       // Direct to a faster direct endpoint.
  uint64_t fallbacks = 0;      // Direct to relay (or none) after kPathTimeout of silence.
  uint64_t ssh_upgrades = 0;   // Relay (or none) to SSH.
  uint64_t ssh_fallbacks = 0;  // SSH to relay (or none): silence or the connection dropped.
};

class PathSelector {
 public:
  using TxIdGenerator = std::function<TxId()>;

  // Transaction ids from the OS CSPRNG: they must be unguessable, or anyone could forge a pong.
  PathSelector();
  // Tests pass a deterministic generator; it must not repeat ids that are still outstanding.
  explicit PathSelector(TxIdGenerator tx_id_generator);

  // The peer's candidate endpoints from the network map (may change at any time). Endpoints with
  // port 0 and duplicates are dropped, and only the first kMaxCandidates kept. Any endpoint not
  // probed before starts a probe round now and resets the backoff.
  void SetCandidates(absl::Span<const Endpoint> candidates, MonoTime now);
  // Whether a relay connection to the peer is up; decides between kRelay and kNone while no direct
  // path is confirmed.
  void SetRelayAvailable(bool available);
  // Whether the peer offers SSH (and this agent runs it), and whether a connection to it is up now.
  // A dropped connection ends the SSH path at once.
  void SetSsh(bool offered, bool connected, MonoTime now);

  // A sealed Pong from the peer arrived directly from `from`, echoing `tx_id`.
  void OnPong(const Endpoint& from, const TxId& tx_id, MonoTime now);
  // A sealed Pong from the peer arrived over its SSH connection, echoing `tx_id`.
  void OnSshPong(const TxId& tx_id, MonoTime now);
  // A WireGuard packet from the peer arrived directly from `from` and passed decryption and the
  // replay window (only then is it proof that the path works now; a replayed packet is not). Cheap
  // when `from` is the current path: call it for every such packet.
  void OnAuthenticatedDirectPacket(const Endpoint& from, MonoTime now);
  // A sealed Ping from the peer arrived directly from `from` (after the agent answered it). Pings
  // are not replay-protected, so this is only a hint to probe `from`.
  void OnPingReceived(const Endpoint& from, MonoTime now);
  // The peer sent a CallMeMaybe (it is probing us now): probe its listed endpoints and the known
  // candidates at once. Does not ask for a call-me-maybe back, which would loop between the two
  // peers; resets the backoff only if it lists endpoints not probed before, for the same reason.
  // At most one round per kCallMeMaybeMinInterval starts this way; later ones wait for the next
  // scheduled round.
  void OnCallMeMaybe(absl::Span<const Endpoint> candidates, MonoTime now);
  // Runs timers: heartbeats, fallback, scheduled probe rounds. Call at or soon after
  // NextDeadline(); calling more often is harmless.
  void Tick(MonoTime now);

  // Returns and clears the actions accumulated by the calls above. The agent sends the pings right
  // away: round-trip times are measured from the `now` of the call that requested them.
  PathActions TakeActions();
  // When Tick must next run, or nullopt when no timer is pending (no direct path, no candidates).
  std::optional<MonoTime> NextDeadline() const;

  Path CurrentPath() const;
  // The last measured round-trip time of the current direct path, or nullopt when not direct.
  std::optional<Duration> DirectLatency() const;
  // The last measured round-trip time over SSH while the SSH path is in use, or nullopt.
  std::optional<Duration> SshLatency() const;
  const PathStats& stats() const { return stats_; }

 private:
  struct OutstandingPing {
    TxId tx_id;
    Endpoint endpoint;
    MonoTime sent_at;
    bool ssh = false;
  };
  struct HintSlot {
    Endpoint endpoint;
    MonoTime sent_at;
    bool used = false;
  };

  // Network-map candidates, then call-me-maybe candidates not already among them.
  std::vector<Endpoint> ProbeSet() const;
  bool InProbeSet(const Endpoint& endpoint) const;
  void SendPing(const Endpoint& endpoint, MonoTime now, bool ssh = false);
  // Runs the SSH path's timers (heartbeat, silence) and asks for a connection when needed.
  void TickSsh(MonoTime now);
  void SshDown();
  // Pings every candidate (and `extra`, if valid and not a candidate); asks for a call-me-maybe
  // when `ask_peer`.
  void ProbeRound(MonoTime now, bool ask_peer, const Endpoint& extra = Endpoint());
  // Schedules the next round after the current interval, then doubles the interval.
  void ScheduleNextRound(MonoTime now);
  void Upgrade(const Endpoint& endpoint, Duration latency, MonoTime now);
  void Fallback(MonoTime now);
  void HintPing(const Endpoint& endpoint, MonoTime now);
  void ExpirePings(MonoTime now);

  TxIdGenerator tx_id_generator_;
  std::vector<Endpoint> candidates_;
  std::vector<Endpoint> call_me_maybe_candidates_;
  bool relay_available_ = false;

  bool direct_ = false;
  Endpoint direct_endpoint_;
  Duration direct_latency_{};
  MonoTime last_proof_{};
  MonoTime next_heartbeat_{};

  bool ssh_offered_ = false;
  bool ssh_connected_ = false;
  bool ssh_ok_ = false;  // A pong over SSH within kPathTimeout.
  Duration ssh_latency_{};
  MonoTime ssh_last_proof_{};
  MonoTime next_ssh_ping_{};

  std::optional<MonoTime> next_probe_;
  Duration probe_interval_ = kProbeIntervalMin;
  std::optional<MonoTime> last_call_me_maybe_;
  // When a received call-me-maybe last started a probe round.
  std::optional<MonoTime> last_call_me_maybe_round_;

  std::vector<OutstandingPing> outstanding_;  // In the order sent.
  std::array<HintSlot, kHintSlots> hints_{};

  PathActions pending_;
  PathStats stats_;
};

}  // namespace tunnelmesh::disco
