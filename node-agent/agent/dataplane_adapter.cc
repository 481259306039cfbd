#include "node-agent/agent/dataplane_adapter.h"

namespace tunnelmesh {

void DataplaneAdapter::SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) {
  plane_->SendRaw(bytes, TransportEndpoint(to));
}

void DataplaneAdapter::UseDirect(const PublicKey& peer, const Endpoint& endpoint) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr) p->set_endpoint(endpoint);
}

void DataplaneAdapter::UseRelay(const PublicKey& peer) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr) {
    p->set_endpoint(TransportEndpoint::Relay(p->id()));
  }
}

void DataplaneAdapter::UseSsh(const PublicKey& peer) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr) {
    p->set_endpoint(TransportEndpoint::Ssh(p->id()));
  }
}

void DataplaneAdapter::SendSshDatagram(absl::Span<const uint8_t> bytes, const PublicKey& peer) {
  if (ssh_ != nullptr) (void)ssh_->Send(peer, bytes);
}

void DataplaneAdapter::ConnectSsh(const PublicKey& peer) {
  if (ssh_ != nullptr) ssh_->Connect(peer);
}

bool DataplaneAdapter::SshConnected(const PublicKey& peer) const {
  return ssh_ != nullptr && ssh_->Connected(peer);
}

void DataplaneAdapter::SuggestEndpoint(const PublicKey& peer, const Endpoint& endpoint) {
  if (noise::Peer* p = device_->FindPeer(peer); p != nullptr && !p->endpoint()) {
    p->set_endpoint(endpoint);
  }
}

void DataplaneAdapter::PublishRoutes(std::shared_ptr<const RouteTable> routes) {
  plane_->SetRoutes(std::move(routes));
}

void DataplaneAdapter::SetForeignHandler(ForeignHandler handler) {
  // Discovery and STUN arrive on the UDP socket only; a relayed datagram is always WireGuard.
  plane_->SetForeignHandler([handler = std::move(handler)](absl::Span<const uint8_t> datagram,
                                                           const TransportEndpoint& from) {
    return from.is_udp() && handler(datagram, from.udp());
  });
}

void DataplaneAdapter::WireRelay(RelayClient* relay) {
  relay->SetReceiveCallback(
      [bind = relay_bind_](const PublicKey& source, absl::Span<const uint8_t> payload) {
        bind->Deliver(source, payload);
      });
}

void DataplaneAdapter::PublishRelayPeers(const PeerTable& table) {
  std::set<uint32_t> now;
  for (const auto& [key, info] : table.peers()) {
    if (info.is_static) continue;
    relay_bind_->SetPeer(info.device_id, key);
    now.insert(info.device_id);
  }
  for (uint32_t id : relayed_ids_) {
    if (!now.count(id)) relay_bind_->RemovePeer(id);
  }
  relayed_ids_ = std::move(now);
}

}  // namespace tunnelmesh
