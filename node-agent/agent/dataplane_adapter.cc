#include "node-agent/agent/dataplane_adapter.h"

#include "node-agent/dataplane/relay_endpoint.h"

namespace tunnelmesh {

void DataplaneAdapter::SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) {
  plane_->SendRaw(bytes, to);
}

void DataplaneAdapter::UseDirect(const PublicKey& peer, const Endpoint& endpoint) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr) p->set_endpoint(endpoint);
}

void DataplaneAdapter::UseRelay(const PublicKey& peer) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr) {
    p->set_endpoint(RelayEndpoint(p->id()));
  }
}

void DataplaneAdapter::SuggestEndpoint(const PublicKey& peer, const Endpoint& endpoint) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr && !p->endpoint()) {
    p->set_endpoint(endpoint);
  }
}

void DataplaneAdapter::PublishRoutes(std::shared_ptr<const RouteTable> routes) {
  plane_->SetRoutes(std::move(routes));
}

void DataplaneAdapter::SetForeignHandler(Dataplane::ForeignHandler handler) {
  plane_->SetForeignHandler(std::move(handler));
}

void DataplaneAdapter::WireRelay(RelayClient* relay) {
  relay->SetReceiveCallback([this](const PublicKey& source, absl::Span<const uint8_t> payload) {
    std::shared_ptr<const RelayPeers> peers = relay_peers_.load();
    auto it = peers->id_by_key.find(source);
    if (it == peers->id_by_key.end()) return;
    plane_->InjectInbound(payload, RelayEndpoint(it->second));
  });
  plane_->SetRelaySink([this, relay](uint32_t peer_id, absl::Span<const uint8_t> bytes) {
    std::shared_ptr<const RelayPeers> peers = relay_peers_.load();
    auto it = peers->key_by_id.find(peer_id);
    if (it == peers->key_by_id.end()) return;
    relay->Send(it->second, bytes);
  });
}

void DataplaneAdapter::PublishRelayPeers(const PeerTable& table) {
  auto peers = std::make_shared<RelayPeers>();
  for (const auto& [key, info] : table.peers()) {
    if (info.is_static) continue;
    peers->key_by_id[info.device_id] = key;
    peers->id_by_key[key] = info.device_id;
  }
  relay_peers_.store(std::move(peers));
}

}  // namespace tunnelmesh
