#include "node-agent/nat/path_manager.h"

#include <algorithm>
#include <variant>

#include "lib/base/log.h"

namespace tunnelmesh {

const char* DiscoMessageName(const disco::Message& message) {
  if (std::holds_alternative<disco::Ping>(message)) return "ping";
  if (std::holds_alternative<disco::Pong>(message)) return "pong";
  return "call-me-maybe";
}

PathManager::PathManager(const SecretKey& private_key, const PublicKey& public_key,
                         PathTransport* transport, disco::PathSelector::TxIdGenerator tx_ids)
    : private_key_(private_key.Clone()),
      public_key_(public_key),
      transport_(transport),
      tx_ids_(std::move(tx_ids)) {}

void PathManager::UpsertPeer(const PublicKey& key, const std::string& name,
                             absl::Span<const Endpoint> candidates, MonoTime now) {
  auto it = peers_.find(key);
  if (it == peers_.end()) {
    auto peer = std::make_unique<PeerPaths>(tx_ids_);
    peer->box_ok = disco::BoxKey::Derive(private_key_, key, &peer->box);
    if (!peer->box_ok) TM_LOG_WARN("peer {}: its key is unusable for discovery", name);
    it = peers_.emplace(key, std::move(peer)).first;
  }
  PeerPaths& peer = *it->second;
  peer.name = name;
  peer.selector.SetRelayAvailable(relay_available_);
  peer.selector.SetCandidates(candidates, now);
  if (peer.selector.CurrentPath().kind == disco::PathKind::kNone && !candidates.empty()) {
    transport_->SuggestEndpoint(key, candidates.front());
  }
  RunActions(key, peer);
}

void PathManager::RemovePeer(const PublicKey& key) {
  peers_.erase(key);
  call_me_maybe_.erase(std::remove(call_me_maybe_.begin(), call_me_maybe_.end(), key),
                       call_me_maybe_.end());
}

void PathManager::SetRelayAvailable(bool available) {
  relay_available_ = available;
  for (auto& [key, peer] : peers_) peer->selector.SetRelayAvailable(available);
}

void PathManager::SetSshOffered(const PublicKey& key, bool offered, MonoTime now) {
  auto it = peers_.find(key);
  if (it == peers_.end()) return;
  it->second->ssh_offered = offered;
  it->second->selector.SetSsh(offered, offered && transport_->SshConnected(key), now);
  RunActions(key, *it->second);
}

void PathManager::SendSsh(const PublicKey& key, const PeerPaths& peer,
                          const disco::Message& message) {
  if (!peer.box_ok) return;
  uint8_t out[disco::kMaxDatagramSize];
  const size_t size =
      disco::SealWithKey(peer.box, public_key_, message, absl::Span<uint8_t>(out, sizeof(out)));
  if (size > 0) transport_->SendSshDatagram(absl::Span<const uint8_t>(out, size), key);
  TM_LOG_DEBUG("disco {} to {} (ssh)", DiscoMessageName(message), peer.name);
}

void PathManager::Send(const PeerPaths& peer, const disco::Message& message, const Endpoint& to) {
  if (!peer.box_ok) return;
  uint8_t out[disco::kMaxDatagramSize];
  const size_t size =
      disco::SealWithKey(peer.box, public_key_, message, absl::Span<uint8_t>(out, sizeof(out)));
  if (size > 0) transport_->SendDatagram(absl::Span<const uint8_t>(out, size), to);
  TM_LOG_DEBUG("disco {} to {} ({})", DiscoMessageName(message), peer.name, to.ToString());
}

void PathManager::ApplyPath(const PublicKey& key, PeerPaths& peer) {
  const disco::Path path = peer.selector.CurrentPath();
  if (path == peer.applied) return;
  if (path.kind == disco::PathKind::kDirect) {
    transport_->UseDirect(key, path.endpoint);
    TM_LOG_INFO("path to {}: direct via {}", peer.name, path.endpoint.ToString());
  } else if (path.kind == disco::PathKind::kSsh) {
    transport_->UseSsh(key);
    TM_LOG_INFO("path to {}: ssh", peer.name);
  } else if (path.kind == disco::PathKind::kRelay) {
    transport_->UseRelay(key);
    TM_LOG_INFO("path to {}: relay", peer.name);
  }
  if (peer.applied_once) ++peer.changes;
  peer.applied_once = true;
  peer.applied = path;
}

void PathManager::RunActions(const PublicKey& key, PeerPaths& peer) {
  disco::PathActions actions = peer.selector.TakeActions();
  for (const disco::PingRequest& ping : actions.pings) {
    if (ping.ssh) {
      SendSsh(key, peer, disco::Ping{ping.tx_id});
    } else {
      Send(peer, disco::Ping{ping.tx_id}, ping.endpoint);
    }
  }
  if (actions.connect_ssh) transport_->ConnectSsh(key);
  if (actions.send_call_me_maybe &&
      std::find(call_me_maybe_.begin(), call_me_maybe_.end(), key) == call_me_maybe_.end()) {
    call_me_maybe_.push_back(key);
  }
  ApplyPath(key, peer);
}

PathManager::PeerPaths* PathManager::Open(absl::Span<const uint8_t> datagram, PublicKey* sender,
                                          disco::Message* message) {
  if (!disco::PeekSender(datagram, sender)) {
    ++drops_.bad_seal;
    return nullptr;
  }
  auto it = peers_.find(*sender);
  if (it == peers_.end()) {
    ++drops_.unknown_peer;
    return nullptr;
  }
  PeerPaths& peer = *it->second;
  if (!peer.box_ok || !disco::OpenWithKey(peer.box, datagram, message)) {
    ++drops_.bad_seal;
    return nullptr;
  }
  return &peer;
}

void PathManager::OnSshDiscoDatagram(const PublicKey& from, const Endpoint& remote,
                                     absl::Span<const uint8_t> datagram, MonoTime now) {
  PublicKey sender;
  disco::Message message;
  PeerPaths* peer = Open(datagram, &sender, &message);
  if (peer == nullptr) return;
  // Sealed by another member than the one on the other end of this connection: forwarded or
  // replayed, never ours to answer.
  if (!(sender == from)) {
    ++drops_.unknown_peer;
    return;
  }
  TM_LOG_DEBUG("disco {} from {} (ssh)", DiscoMessageName(message), peer->name);
  if (const auto* ping = std::get_if<disco::Ping>(&message)) {
    SendSsh(sender, *peer, disco::Pong{ping->tx_id, remote});
  } else if (const auto* pong = std::get_if<disco::Pong>(&message)) {
    peer->selector.OnSshPong(pong->tx_id, now);
  } else if (const auto* cmm = std::get_if<disco::CallMeMaybe>(&message)) {
    peer->selector.OnCallMeMaybe(cmm->endpoints, now);
  }
  RunActions(sender, *peer);
}

void PathManager::OnDiscoDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from,
                                  MonoTime now) {
  PublicKey sender;
  disco::Message message;
  PeerPaths* found = Open(datagram, &sender, &message);
  if (found == nullptr) return;
  PeerPaths& peer = *found;
  TM_LOG_DEBUG("disco {} from {} ({})", DiscoMessageName(message), peer.name, from.ToString());
  if (const auto* ping = std::get_if<disco::Ping>(&message)) {
    Send(peer, disco::Pong{ping->tx_id, from}, from);
    peer.selector.OnPingReceived(from, now);
  } else if (const auto* pong = std::get_if<disco::Pong>(&message)) {
    peer.selector.OnPong(from, pong->tx_id, now);
  } else if (const auto* cmm = std::get_if<disco::CallMeMaybe>(&message)) {
    peer.selector.OnCallMeMaybe(cmm->endpoints, now);
  }
  RunActions(sender, peer);
}

void PathManager::OnCallMeMaybe(const PublicKey& from, absl::Span<const Endpoint> endpoints,
                                MonoTime now) {
  auto it = peers_.find(from);
  if (it == peers_.end()) return;
  it->second->selector.OnCallMeMaybe(endpoints, now);
  RunActions(from, *it->second);
}

void PathManager::Tick(MonoTime now) {
  for (auto& [key, peer] : peers_) {
    peer->selector.SetRelayAvailable(relay_available_);
    peer->selector.SetSsh(peer->ssh_offered, peer->ssh_offered && transport_->SshConnected(key),
                          now);
    peer->selector.Tick(now);
    RunActions(key, *peer);
  }
}

std::vector<PublicKey> PathManager::TakeCallMeMaybe() {
  std::vector<PublicKey> out;
  out.swap(call_me_maybe_);
  return out;
}

disco::Path PathManager::PathOf(const PublicKey& key) const {
  auto it = peers_.find(key);
  return it == peers_.end() ? disco::Path{} : it->second->selector.CurrentPath();
}

PathStats PathManager::StatsOf(const PublicKey& key) const {
  auto it = peers_.find(key);
  if (it == peers_.end()) return {};
  const PeerPaths& peer = *it->second;
  std::optional<Duration> rtt = peer.selector.DirectLatency();
  if (!rtt) rtt = peer.selector.SshLatency();
  return {peer.selector.CurrentPath(), rtt, peer.changes};
}

std::vector<std::pair<PublicKey, disco::PathKind>> PathManager::Paths() const {
  std::vector<std::pair<PublicKey, disco::PathKind>> out;
  out.reserve(peers_.size());
  for (const auto& [key, peer] : peers_) out.emplace_back(key, peer->applied.kind);
  return out;
}

PathManager::Counts PathManager::PathCounts() const {
  Counts counts;
  for (const auto& [key, peer] : peers_) {
    if (peer->applied.kind == disco::PathKind::kDirect) ++counts.direct;
    if (peer->applied.kind == disco::PathKind::kRelay) ++counts.relayed;
    if (peer->applied.kind == disco::PathKind::kSsh) ++counts.ssh;
  }
  return counts;
}

}  // namespace tunnelmesh
