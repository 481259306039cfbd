// Where a datagram to a peer goes: a UDP address, the coordinator's relay, or the SSH connection to
// that peer. The WireGuard core (lib/noise) stores one per peer and hands it back with every
// message it wants sent; the agent's transports (node-agent/transport/bind.h) carry the message
// accordingly. Relay frames and SSH frames are addressed by the destination's public key; the
// endpoint names the peer by its device id and the transport maps ids to keys, so this stays a
// small value type copied per packet.
#pragma once

#include <cstdint>
#include <string>

#include "lib/net/ip.h"

namespace tunnelmesh {

enum class Transport : uint8_t {
  kUdp = 0,
  kRelay = 1,
  kSsh = 2,
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
  static TransportEndpoint Ssh(uint32_t peer_id) {
    TransportEndpoint e;
    e.transport_ = Transport::kSsh;
    e.relay_peer_id_ = peer_id;
    return e;
  }

  Transport transport() const { return transport_; }
  bool is_udp() const { return transport_ == Transport::kUdp; }
  bool is_relay() const { return transport_ == Transport::kRelay; }
  bool is_ssh() const { return transport_ == Transport::kSsh; }
  // The UDP address; unspecified (port 0) for the relay and SSH.
  const Endpoint& udp() const { return udp_; }
  // The destination peer's device id, for the relay and SSH.
  uint32_t relay_peer_id() const { return relay_peer_id_; }
  bool valid() const { return !is_udp() || udp_.valid(); }
  // "1.2.3.4:51820", "[fd00::1]:51820", "relay" or "ssh".
  std::string ToString() const {
    if (is_relay()) return "relay";
    if (is_ssh()) return "ssh";
    return udp_.ToString();
  }

  friend bool operator==(const TransportEndpoint& a, const TransportEndpoint& b) {
    if (a.transport_ != b.transport_) return false;
    return a.is_udp() ? a.udp_ == b.udp_ : a.relay_peer_id_ == b.relay_peer_id_;
  }

 private:
  Transport transport_ = Transport::kUdp;
  Endpoint udp_;
  uint32_t relay_peer_id_ = 0;
};

}  // namespace tunnelmesh
