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
    Send(peer, disco::Ping{ping.tx_id}, ping.endpoint);
  }
  if (actions.send_call_me_maybe &&
      std::find(call_me_maybe_.begin(), call_me_maybe_.end(), key) == call_me_maybe_.end()) {
    call_me_maybe_.push_back(key);
  }
  ApplyPath(key, peer);
}

void PathManager::OnDiscoDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from,
                                  MonoTime now) {
  PublicKey sender;
  if (!disco::PeekSender(datagram, &sender)) {
    ++drops_.bad_seal;
    return;
  }
  auto it = peers_.find(sender);
  if (it == peers_.end()) {
    ++drops_.unknown_peer;
    return;
  }
  PeerPaths& peer = *it->second;
  disco::Message message;
  if (!peer.box_ok || !disco::OpenWithKey(peer.box, datagram, &message)) {
    ++drops_.bad_seal;
    return;
  }
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
  return {peer.selector.CurrentPath(), peer.selector.DirectLatency(), peer.changes};
}

std::pair<uint32_t, uint32_t> PathManager::PathCounts() const {
  std::pair<uint32_t, uint32_t> counts{0, 0};
  for (const auto& [key, peer] : peers_) {
    if (peer->applied.kind == disco::PathKind::kDirect) ++counts.first;
    if (peer->applied.kind == disco::PathKind::kRelay) ++counts.second;
  }
  return counts;
}

}  // namespace tunnelmesh
