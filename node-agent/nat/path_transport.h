// The path manager's seam to the data plane: send a datagram from the data socket or over a peer's
// SSH connection, open SSH connections, and point a device peer at a direct UDP endpoint, at its
// SSH connection or at the relay. The agent implements it over today's data
// plane (node-agent/agent/dataplane_adapter.h); unit tests record the calls with a fake.
//
// Threads: called from the agent's control thread only.
#pragma once

#include "absl/types/span.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

class PathTransport {
 public:
  virtual ~PathTransport() = default;
  // Sends a discovery or STUN datagram from the data socket to a UDP endpoint.
  virtual void SendDatagram(absl::Span<const uint8_t> bytes, const Endpoint& to) = 0;
  // Traffic to `peer` goes directly to `endpoint` from now on.
  virtual void UseDirect(const PublicKey& peer, const Endpoint& endpoint) = 0;
  // Traffic to `peer` goes through the relay from now on.
  virtual void UseRelay(const PublicKey& peer) = 0;
  // Before any path is confirmed: try `endpoint` directly if the peer has no endpoint yet (it
  // works on open networks).
  virtual void SuggestEndpoint(const PublicKey& peer, const Endpoint& endpoint) = 0;

  // The SSH path (defaults: no SSH, for agents and tests without it).
  // Traffic to `peer` goes over its SSH connection from now on.
  virtual void UseSsh(const PublicKey& peer) {}
  // Sends a discovery datagram over the SSH connection to `peer` (dropped if there is none).
  virtual void SendSshDatagram(absl::Span<const uint8_t> bytes, const PublicKey& peer) {}
  // Starts dialing `peer` over SSH unless connected, dialing, or backing off after a failure.
  virtual void ConnectSsh(const PublicKey& peer) {}
  // Whether an SSH connection to `peer` (dialed or accepted) is up now.
  virtual bool SshConnected(const PublicKey& peer) const { return false; }
};

}  // namespace tunnelmesh
