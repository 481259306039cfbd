#include "lib/disco/path_selector.h"

#include <algorithm>
#include <utility>

#include "lib/crypto/aead.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh::disco {
namespace {

bool Contains(const std::vector<Endpoint>& endpoints, const Endpoint& endpoint) {
  return std::find(endpoints.begin(), endpoints.end(), endpoint) != endpoints.end();
}

// Drops port-0 endpoints and duplicates, keeps the first kMaxCandidates, preserving order.
std::vector<Endpoint> Normalize(absl::Span<const Endpoint> endpoints) {
  std::vector<Endpoint> out;
  for (const Endpoint& endpoint : endpoints) {
    if (out.size() == kMaxCandidates) break;
    if (endpoint.valid() && !Contains(out, endpoint)) out.push_back(endpoint);
  }
  return out;
}

// True when `candidate` beats `current` by both hysteresis margins.
bool MuchFaster(Duration candidate, Duration current) {
  return candidate * 100 <= current * (100 - kSwitchMinGainPercent) &&
         current - candidate >= kSwitchMinGain;
}

TxId RandomTxId() {
  TxId id;
  RandomBytes(absl::MakeSpan(id));
  return id;
}

}  // namespace

const char* PathKindName(PathKind kind) {
  switch (kind) {
    case PathKind::kNone:
      return "none";
    case PathKind::kRelay:
      return "relay";
    case PathKind::kDirect:
      return "direct";
    case PathKind::kSsh:
      return "ssh";
  }
  return "unknown";
}

PathSelector::PathSelector() : tx_id_generator_(RandomTxId) { InitCrypto(); }

PathSelector::PathSelector(TxIdGenerator tx_id_generator)
    : tx_id_generator_(std::move(tx_id_generator)) {}

std::vector<Endpoint> PathSelector::ProbeSet() const {
  std::vector<Endpoint> set = candidates_;
  for (const Endpoint& endpoint : call_me_maybe_candidates_) {
    if (!Contains(set, endpoint)) set.push_back(endpoint);
  }
  return set;
}

bool PathSelector::InProbeSet(const Endpoint& endpoint) const {
  return Contains(candidates_, endpoint) || Contains(call_me_maybe_candidates_, endpoint);
}

void PathSelector::SetCandidates(absl::Span<const Endpoint> candidates, MonoTime now) {
  std::vector<Endpoint> next = Normalize(candidates);
  bool has_new =
      std::any_of(next.begin(), next.end(), [this](const Endpoint& e) { return !InProbeSet(e); });
  candidates_ = std::move(next);
  if (has_new) {
    probe_interval_ = kProbeIntervalMin;
    // Even on a direct path: a new endpoint (say, a LAN address) may be faster.
    ProbeRound(now, /*ask_peer=*/true);
    ScheduleNextRound(now);
  } else if (ProbeSet().empty()) {
    next_probe_.reset();
  }
}

void PathSelector::SetRelayAvailable(bool available) { relay_available_ = available; }

void PathSelector::SetSsh(bool offered, bool connected, MonoTime now) {
  ssh_offered_ = offered;
  connected = connected && offered;
  if (connected && !ssh_connected_) next_ssh_ping_ = now;  // Ping over a new connection at once.
  ssh_connected_ = connected;
  if (!connected) SshDown();
  TickSsh(now);
}

void PathSelector::SshDown() {
  if (ssh_ok_ && !direct_) ++stats_.ssh_fallbacks;
  ssh_ok_ = false;
  ssh_latency_ = Duration::zero();
}

void PathSelector::TickSsh(MonoTime now) {
  if (direct_ || !ssh_offered_) {
    // Not needed while direct: its heartbeats stop and the idle connection closes; after a direct
    // path dies the SSH path must answer again before it carries traffic.
    ssh_ok_ = false;
    return;
  }
  if (!ssh_connected_) {
    pending_.connect_ssh = true;
    return;
  }
  if (ssh_ok_ && now - ssh_last_proof_ >= kPathTimeout) SshDown();
  if (now >= next_ssh_ping_) {
    SendPing(Endpoint(), now, /*ssh=*/true);
    next_ssh_ping_ = now + kHeartbeatInterval;
  }
}

void PathSelector::OnSshPong(const TxId& tx_id, MonoTime now) {
  auto it = std::find_if(outstanding_.begin(), outstanding_.end(),
                         [&](const OutstandingPing& p) { return p.tx_id == tx_id; });
  if (it == outstanding_.end() || !it->ssh) {
    ++stats_.pongs_ignored;
    return;
  }
  const Duration latency = now - it->sent_at;
  outstanding_.erase(it);
  if (latency > kPingTimeout || latency < Duration::zero() || !ssh_connected_ || direct_) {
    ++stats_.pongs_ignored;
    return;
  }
  ++stats_.pongs_accepted;
  if (!ssh_ok_) ++stats_.ssh_upgrades;
  ssh_ok_ = true;
  ssh_latency_ = latency;
  ssh_last_proof_ = std::max(ssh_last_proof_, now);
}

void PathSelector::OnPong(const Endpoint& from, const TxId& tx_id, MonoTime now) {
  auto it = std::find_if(outstanding_.begin(), outstanding_.end(),
                         [&](const OutstandingPing& p) { return p.tx_id == tx_id; });
  // A pong from another endpoint than the ping went to does not prove that endpoint; keep waiting
  // for the right one.
  if (it == outstanding_.end() || it->ssh || !(it->endpoint == from)) {
    ++stats_.pongs_ignored;
    return;
  }
  Duration latency = now - it->sent_at;
  outstanding_.erase(it);
  if (latency > kPingTimeout || latency < Duration::zero()) {
    ++stats_.pongs_ignored;
    return;
  }
  ++stats_.pongs_accepted;
  if (!direct_) {
    Upgrade(from, latency, now);
  } else if (from == direct_endpoint_) {
    last_proof_ = std::max(last_proof_, now);
    direct_latency_ = latency;
  } else if (MuchFaster(latency, direct_latency_)) {
    Upgrade(from, latency, now);
  }
}

void PathSelector::OnAuthenticatedDirectPacket(const Endpoint& from, MonoTime now) {
  if (direct_ && from == direct_endpoint_) {
    last_proof_ = std::max(last_proof_, now);
    return;
  }
  HintPing(from, now);
}

void PathSelector::OnPingReceived(const Endpoint& from, MonoTime now) {
  if (direct_ && from == direct_endpoint_) return;
  HintPing(from, now);
}

void PathSelector::OnCallMeMaybe(absl::Span<const Endpoint> candidates, MonoTime now) {
  ++stats_.call_me_maybe_received;
  std::vector<Endpoint> next = Normalize(candidates);
  bool has_new =
      std::any_of(next.begin(), next.end(), [this](const Endpoint& e) { return !InProbeSet(e); });
  call_me_maybe_candidates_ = std::move(next);
  // Asking back would make two peers trade call-me-maybes forever, and resetting the backoff on
  // every one would let each peer's scheduled rounds reset the other's: both would then probe
  // every kProbeIntervalMin forever. New endpoints are news, though.
  if (has_new) probe_interval_ = kProbeIntervalMin;
  if (last_call_me_maybe_round_ && now - *last_call_me_maybe_round_ < kCallMeMaybeMinInterval) {
    ++stats_.call_me_maybe_deferred;
    if (has_new || !next_probe_) ScheduleNextRound(now);
    return;
  }
  last_call_me_maybe_round_ = now;
  ProbeRound(now, /*ask_peer=*/false);
  if (has_new || !next_probe_) ScheduleNextRound(now);
}

void PathSelector::Tick(MonoTime now) {
  ExpirePings(now);
  TickSsh(now);
  if (direct_) {
    if (now - last_proof_ >= kPathTimeout) {
      Fallback(now);
    } else if (now >= next_heartbeat_) {
      SendPing(direct_endpoint_, now);
      next_heartbeat_ = now + kHeartbeatInterval;
    }
    return;
  }
  if (next_probe_ && now >= *next_probe_) {
    ProbeRound(now, /*ask_peer=*/true);
    ScheduleNextRound(now);
  }
}

PathActions PathSelector::TakeActions() { return std::exchange(pending_, PathActions()); }

std::optional<MonoTime> PathSelector::NextDeadline() const {
  if (direct_) return std::min(next_heartbeat_, last_proof_ + kPathTimeout);
  std::optional<MonoTime> deadline = next_probe_;
  if (ssh_connected_) {
    MonoTime ssh =
        ssh_ok_ ? std::min(next_ssh_ping_, ssh_last_proof_ + kPathTimeout) : next_ssh_ping_;
    deadline = deadline ? std::min(*deadline, ssh) : ssh;
  }
  return deadline;
}

Path PathSelector::CurrentPath() const {
  if (direct_) return {PathKind::kDirect, direct_endpoint_};
  if (ssh_ok_) return {PathKind::kSsh, Endpoint()};
  if (relay_available_) return {PathKind::kRelay, Endpoint()};
  return {PathKind::kNone, Endpoint()};
}

std::optional<Duration> PathSelector::DirectLatency() const {
  if (!direct_) return std::nullopt;
  return direct_latency_;
}

std::optional<Duration> PathSelector::SshLatency() const {
  if (direct_ || !ssh_ok_) return std::nullopt;
  return ssh_latency_;
}

void PathSelector::SendPing(const Endpoint& endpoint, MonoTime now, bool ssh) {
  if (outstanding_.size() >= kMaxOutstandingPings) outstanding_.erase(outstanding_.begin());
  TxId tx_id = tx_id_generator_();
  outstanding_.push_back({tx_id, endpoint, now, ssh});
  pending_.pings.push_back({endpoint, tx_id, ssh});
  ++stats_.pings_requested;
}

void PathSelector::ProbeRound(MonoTime now, bool ask_peer, const Endpoint& extra) {
  std::vector<Endpoint> set = ProbeSet();
  if (extra.valid() && !Contains(set, extra)) set.push_back(extra);
  if (!set.empty()) {
    ++stats_.probe_rounds;
    for (const Endpoint& endpoint : set) SendPing(endpoint, now);
  }
  // Asked even with nothing to ping: the peer's pings then reach us as hints, which is how a
  // path to an endpoint nobody listed (a peer-reflexive address) is found.
  if (ask_peer && (!last_call_me_maybe_ || now - *last_call_me_maybe_ >= kCallMeMaybeMinInterval)) {
    pending_.send_call_me_maybe = true;
    last_call_me_maybe_ = now;
    ++stats_.call_me_maybe_requested;
  }
}

void PathSelector::ScheduleNextRound(MonoTime now) {
  if (direct_ || ProbeSet().empty()) {
    next_probe_.reset();
    return;
  }
  next_probe_ = now + probe_interval_;
  probe_interval_ = std::min<Duration>(probe_interval_ * 2, kProbeIntervalMax);
}

void PathSelector::Upgrade(const Endpoint& endpoint, Duration latency, MonoTime now) {
  if (direct_) {
    ++stats_.switches;
  } else {
    ++stats_.upgrades;
  }
  direct_ = true;
  direct_endpoint_ = endpoint;
  direct_latency_ = latency;
  last_proof_ = now;
  next_heartbeat_ = now + kHeartbeatInterval;
  next_probe_.reset();
  probe_interval_ = kProbeIntervalMin;
  ssh_ok_ = false;
}

void PathSelector::Fallback(MonoTime now) {
  Endpoint dead = direct_endpoint_;
  direct_ = false;
  direct_endpoint_ = Endpoint();
  direct_latency_ = Duration::zero();
  ++stats_.fallbacks;
  // SSH, if offered, is asked for (or pinged) at once.
  next_ssh_ping_ = now;
  TickSsh(now);
  // Probe at once, the lost endpoint included: most outages are short (a NAT rebinding, a Wi-Fi
  // roam), and the peer, which sees the same silence, is about to do the same.
  probe_interval_ = kProbeIntervalMin;
  ProbeRound(now, /*ask_peer=*/true, dead);
  ScheduleNextRound(now);
}

void PathSelector::HintPing(const Endpoint& endpoint, MonoTime now) {
  if (!endpoint.valid()) return;
  HintSlot* slot = nullptr;
  for (HintSlot& s : hints_) {
    if (s.used && s.endpoint == endpoint) {
      if (now - s.sent_at < kHintPingSpacing) return;
      slot = &s;
      break;
    }
  }
  if (slot == nullptr) {
    // A free slot, else the oldest one whose spacing has passed; none means too many endpoints
    // were hinted within kHintPingSpacing, and this hint is dropped.
    for (HintSlot& s : hints_) {
      if (!s.used) {
        slot = &s;
        break;
      }
      if (now - s.sent_at >= kHintPingSpacing && (slot == nullptr || s.sent_at < slot->sent_at)) {
        slot = &s;
      }
    }
    if (slot == nullptr) return;
  }
  *slot = {endpoint, now, true};
  ++stats_.hint_pings;
  SendPing(endpoint, now);
}

void PathSelector::ExpirePings(MonoTime now) {
  std::erase_if(outstanding_,
                [now](const OutstandingPing& p) { return now - p.sent_at > kPingTimeout; });
}

}  // namespace tunnelmesh::disco
