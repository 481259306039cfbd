// The path manager's seam to the data plane: send a datagram from the data socket, and point a
// device peer at a direct UDP endpoint or at the relay. The agent implements it over today's data
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
};

}  // namespace tunnelmesh
