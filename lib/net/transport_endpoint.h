// Where a datagram to a peer goes: a UDP address, or the coordinator's relay. The WireGuard core
// (lib/noise) stores one per peer and hands it back with every message it wants sent; the agent's
// transports (node-agent/transport/bind.h) carry the message accordingly. Relay frames are
// addressed by the destination's public key; the endpoint names the peer by its device id and the
// relay transport maps ids to keys, so this stays a small value type copied per packet.
#pragma once

#include <cstdint>
#include <string>

#include "lib/net/ip.h"

namespace tunnelmesh {

enum class Transport : uint8_t {
  kUdp = 0,
  kRelay = 1,
};

class TransportEndpoint {
 public:
  TransportEndpoint() = default;
  // Implicit on purpose: a plain UDP endpoint is the common case everywhere.
  TransportEndpoint(const Endpoint& udp) : udp_(udp) {}  // NOLINT(google-explicit-constructor)
  static TransportEndpoint Relay(uint32_t peer_id) {
    TransportEndpoint e;
    e.transport_ = Transport::kRelay;
    e.relay_peer_id_ = peer_id;
    return e;
  }

  Transport transport() const { return transport_; }
  bool is_udp() const { return transport_ == Transport::kUdp; }
  bool is_relay() const { return transport_ == Transport::kRelay; }
  // The UDP address; unspecified (port 0) for the relay.
  const Endpoint& udp() const { return udp_; }
  // The destination peer's device id, for the relay.
  uint32_t relay_peer_id() const { return relay_peer_id_; }
  bool valid() const { return is_relay() || udp_.valid(); }
  // "1.2.3.4:51820", "[fd00::1]:51820" or "relay".
  std::string ToString() const { return is_relay() ? "relay" : udp_.ToString(); }

  friend bool operator==(const TransportEndpoint& a, const TransportEndpoint& b) {
    if (a.transport_ != b.transport_) return false;
    return a.is_relay() ? a.relay_peer_id_ == b.relay_peer_id_ : a.udp_ == b.udp_;
  }

 private:
  Transport transport_ = Transport::kUdp;
  Endpoint udp_;
  uint32_t relay_peer_id_ = 0;
};

}  // namespace tunnelmesh
