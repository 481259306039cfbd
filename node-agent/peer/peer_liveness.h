// PeerLiveness: whether each agent peer is online, when it was last seen, and whether its
// handshakes fail, for `status` (docs/configuration.md, "status"). It weighs two kinds of evidence:
// - the coordinator's view (Presence in the network map): the peer's agent holds an open watch;
// - what this agent sees itself: authenticated packets from the peer (its receive counter grew) or
//   a confirmed direct path (a direct path dies within disco::kPathTimeout without pongs).
// A peer is online while either says so. A packet counts for kLocalEvidenceWindow, a direct path
// for kDirectPathEvidence (it is confirmed several times a second while the peer answers), and
// neither counts when the coordinator said offline after it: a peer whose agent stopped shows
// offline as soon as the coordinator says so, within seconds. A direct path seen in the
// kDirectPathDeath after that saying does not count either: it may be the stopped peer's path, not
// yet declared dead.
//
// Sans-IO: the agent feeds it samples and wall-clock times. Threads: owned by the agent's control
// thread; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {

// How long one packet from the peer (or a direct path) keeps it online by itself.
inline constexpr absl::Duration kLocalEvidenceWindow = absl::Seconds(30);
// How long a direct path seen in a sample keeps it online (the path falls back to the relay
// within disco::kPathTimeout, 1 s, of the peer's silence; samples come every second).
inline constexpr absl::Duration kDirectPathEvidence = absl::Seconds(3);
// How long a silent peer's direct path may still show as direct: disco::kPathTimeout (1 s) and a
// sample period.
inline constexpr absl::Duration kDirectPathDeath = absl::Seconds(2);
// How long a failed handshake stays a warning unless a handshake succeeds after it.
inline constexpr absl::Duration kHandshakeWarningWindow = absl::Minutes(3);

// One sample of a peer's counters (noise::PeerStats) and path, taken every second or so.
struct PeerSample {
  uint64_t rx_packets = 0;
  uint64_t handshakes_completed = 0;
  uint64_t handshake_responses_rejected = 0;
  uint64_t handshake_timeouts = 0;
  bool direct_path = false;
};

struct PeerLivenessView {
  bool online = false;
  // When the peer was last seen (now while online); InfinitePast: never.
  absl::Time last_seen = absl::InfinitePast();
  // Handshakes with the peer that failed since this agent started (rejected responses and
  // timeouts).
  uint64_t handshake_failures = 0;
  // Sentences for people, e.g. why handshakes fail.
  std::vector<std::string> warnings;
};

class PeerLiveness {
 public:
  // From the network map, received at `now`: the peer's agent is connected to the coordinator (or
  // not), and when the coordinator last heard from it (InfinitePast: not since it started).
  void SetPresence(const PublicKey& key, bool online, absl::Time last_seen, absl::Time now);
  // A sample of the peer's counters at `now`. The first sample of a peer is its baseline.
  void Sample(const PublicKey& key, const PeerSample& sample, absl::Time now);
  void Forget(const PublicKey& key);
  PeerLivenessView View(const PublicKey& key, absl::Time now) const;

 private:
  struct State {
    bool sampled = false;
    PeerSample last;
    absl::Time local_seen = absl::InfinitePast();   // The last packet.
    absl::Time direct_seen = absl::InfinitePast();  // The last sample on a direct path.
    bool coordinator_online = false;
    absl::Time offline_said = absl::InfinitePast();  // When the coordinator last said offline.
    absl::Time coordinator_seen = absl::InfinitePast();
    absl::Time last_rejected = absl::InfinitePast();
    absl::Time last_timeout = absl::InfinitePast();
    absl::Time last_handshake = absl::InfinitePast();
    uint64_t failures = 0;
  };
  std::map<PublicKey, State> peers_;
};

}  // namespace tunnelmesh
