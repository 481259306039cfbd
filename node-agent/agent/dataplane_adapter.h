// The one place the agent's control side touches today's data-plane API (Dataplane::SendRaw,
// SetRoutes, SetForeignHandler, SetRelaySink, InjectInbound and the 100::/64 RelayEndpoint). It
// implements PathTransport for the path manager and wires the relay client to the data plane.
// When the data plane moves to the Bind seam (node-agent/transport/bind.h) and TransportEndpoint
// (lib/net/transport_endpoint.h), this file is what changes.
//
// Threads: PathTransport calls, PublishRoutes and PublishRelayPeers on the control thread. The
// relay sink runs on data-plane threads (under the device's peer lock) and the relay receive
// callback on the relay's I/O thread: both read only the immutable relay-peer snapshot, swapped
// atomically, and take no lock.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>

#include "lib/noise/device.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/nat/path_transport.h"
#include "node-agent/peer/peer_table.h"
#include "node-agent/transport/relay_client.h"

namespace tunnelmesh {

class DataplaneAdapter final : public PathTransport {
 public:
  // `plane` and `device` must outlive the adapter.
  DataplaneAdapter(Dataplane* plane, noise::Device* device) : plane_(plane), device_(device) {}

  // PathTransport.
  void SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) override;
  void UseDirect(const PublicKey& peer, const Endpoint& endpoint) override;
  void UseRelay(const PublicKey& peer) override;
  void SuggestEndpoint(const PublicKey& peer, const Endpoint& endpoint) override;

  // Hands the data plane a new route snapshot.
  void PublishRoutes(std::shared_ptr<const RouteTable> routes);
  // Datagrams that are not WireGuard messages go to `handler` on the inbound data thread. Before
  // the data plane starts.
  void SetForeignHandler(Dataplane::ForeignHandler handler);
  // Connects the relay to the data plane both ways. Before the data plane starts; `relay` must
  // outlive the data plane's threads.
  void WireRelay(RelayClient* relay);
  // The peers reachable through the relay (agent peers of the table), by device id and by key.
  void PublishRelayPeers(const PeerTable& table);

 private:
  struct RelayPeers {
    std::map<uint32_t, PublicKey> key_by_id;
    std::map<PublicKey, uint32_t> id_by_key;
  };

  Dataplane* const plane_;
  noise::Device* const device_;
  std::atomic<std::shared_ptr<const RelayPeers>> relay_peers_{std::make_shared<RelayPeers>()};
};

}  // namespace tunnelmesh
