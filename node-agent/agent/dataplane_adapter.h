// The one place the agent's control side touches the data plane: it implements PathTransport for
// the path manager (discovery and STUN datagrams out of the UDP Bind, discovery over SSH, a peer's
// path applied to its device peer as a UDP, SSH or relay TransportEndpoint), publishes route
// snapshots, and keeps the relay Bind's id <-> key table in step with the peer table.
//
// Threads: every method on the control thread. The data plane reads the route snapshot and the
// relay Bind's table on its own threads; both are safe to replace while it runs.
#pragma once

#include <functional>
#include <memory>
#include <set>

#include "lib/noise/device.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/nat/path_transport.h"
#include "node-agent/peer/peer_table.h"
#include "node-agent/transport/relay_bind.h"
#include "node-agent/transport/relay_client.h"
#include "node-agent/transport/ssh_transport.h"

namespace tunnelmesh {

class DataplaneAdapter final : public PathTransport {
 public:
  // `plane`, `device` and `relay_bind` must outlive the adapter.
  // `ssh` (null: no SSH path) too.
  DataplaneAdapter(Dataplane* plane, noise::Device* device, RelayBind* relay_bind,
                   SshTransport* ssh = nullptr)
      : plane_(plane), device_(device), relay_bind_(relay_bind), ssh_(ssh) {}

  // PathTransport.
  void SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) override;
  void UseDirect(const PublicKey& peer, const Endpoint& endpoint) override;
  void UseRelay(const PublicKey& peer) override;
  void SuggestEndpoint(const PublicKey& peer, const Endpoint& endpoint) override;
  void UseSsh(const PublicKey& peer) override;
  void SendSshDatagram(absl::Span<const uint8_t> bytes, const PublicKey& peer) override;
  void ConnectSsh(const PublicKey& peer) override;
  bool SshConnected(const PublicKey& peer) const override;

  // Hands the data plane a new route snapshot.
  void PublishRoutes(std::shared_ptr<const RouteTable> routes);
  // UDP datagrams that are not WireGuard messages go to `handler` on the inbound data thread; it
  // returns true when it consumed one. Before the data plane starts.
  using ForeignHandler = std::function<bool(absl::Span<const uint8_t>, const Endpoint&)>;
  void SetForeignHandler(ForeignHandler handler);
  // Frames the relay client receives go to the relay Bind. Before the relay connects.
  void WireRelay(RelayClient* relay);
  // The peers reachable through the relay (agent peers of the table), by device id.
  void PublishRelayPeers(const PeerTable& table);

 private:
  Dataplane* const plane_;
  noise::Device* const device_;
  RelayBind* const relay_bind_;
  SshTransport* const ssh_;
  std::set<uint32_t> relayed_ids_;  // What relay_bind_ was last told; control thread only.
};

}  // namespace tunnelmesh
