#include "node-agent/peer/peer_liveness.h"

#include <algorithm>

namespace tunnelmesh {

void PeerLiveness::SetPresence(const PublicKey& key, bool online, absl::Time last_seen,
                               absl::Time now) {
  State& state = peers_[key];
  state.coordinator_online = online;
  if (!online) state.offline_said = now;
  state.coordinator_seen = std::max(state.coordinator_seen, last_seen);
}

void PeerLiveness::Sample(const PublicKey& key, const PeerSample& sample, absl::Time now) {
  State& state = peers_[key];
  const PeerSample before = state.sampled ? state.last : PeerSample{};
  if (sample.rx_packets > before.rx_packets) state.local_seen = now;
  if (sample.direct_path) state.direct_seen = now;
  if (sample.handshakes_completed > before.handshakes_completed) state.last_handshake = now;
  if (sample.handshake_responses_rejected > before.handshake_responses_rejected) {
    state.last_rejected = now;
  }
  if (sample.handshake_timeouts > before.handshake_timeouts) state.last_timeout = now;
  state.failures = sample.handshake_responses_rejected + sample.handshake_timeouts;
  state.last = sample;
  state.sampled = true;
}

void PeerLiveness::Forget(const PublicKey& key) { peers_.erase(key); }

PeerLivenessView PeerLiveness::View(const PublicKey& key, absl::Time now) const {
  PeerLivenessView view;
  auto it = peers_.find(key);
  if (it == peers_.end()) return view;
  const State& state = it->second;
  // Local evidence from before the coordinator said offline is what it already knew.
  auto evidence = [&](absl::Time seen, absl::Duration window) {
    return seen > state.offline_said && now - seen <= window;
  };
  // A direct path counts once it outlived the time a dead peer's path takes to fall back.
  const bool direct = state.direct_seen > state.offline_said + kDirectPathDeath &&
                      now - state.direct_seen <= kDirectPathEvidence;
  view.online =
      state.coordinator_online || evidence(state.local_seen, kLocalEvidenceWindow) || direct;
  view.last_seen =
      view.online ? now : std::max({state.local_seen, state.direct_seen, state.coordinator_seen});
  view.handshake_failures = state.failures;
  // A failure is news until a handshake completes after it, or for kHandshakeWarningWindow.
  auto recent = [&](absl::Time failed) {
    return failed > state.last_handshake && now - failed <= kHandshakeWarningWindow;
  };
  if (recent(state.last_rejected)) {
    view.warnings.push_back(
        "handshake responses from this peer fail to authenticate: its preshared key (or key) "
        "differs from ours (preshared key mismatch?); both ends must have the mesh's current "
        "key, see docs/troubleshooting.md");
  }
  if (recent(state.last_timeout)) {
    view.warnings.push_back(
        "handshakes with this peer went unanswered for 90 s: it is offline, unreachable on its "
        "path, or does not know this member's key");
  }
  return view;
}

}  // namespace tunnelmesh
