// The seam between the data plane and the networks it sends on, after wireguard-go's conn.Bind:
// one Bind per transport (UDP socket, relay connection; SSH later), all with the same shape, so
// the data plane, discovery and STUN run unchanged over real sockets or over the in-memory network
// of the unit tests (transport/testing/fake_network.h, with nat/testing/fake_nat.h in between).
//
// Thread-safety: Send may be called from any thread (the data plane's two threads and the control
// thread send concurrently). Receive is called by one thread only, the data plane's inbound
// thread, after poll() reports readable_fd() readable.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/net/transport_endpoint.h"

namespace tunnelmesh {

// One datagram to send. `data` must stay valid until Send returns; Send never keeps it.
struct OutgoingDatagram {
  const uint8_t* data = nullptr;
  size_t length = 0;
  TransportEndpoint to;
};

// Receives one datagram; the bytes may be modified in place (decryption). They stay valid until
// the next Receive call on the same Bind, so a receiver may batch writes (GRO) over one burst.
using DatagramHandler = absl::FunctionRef<void(absl::Span<uint8_t>, const TransportEndpoint&)>;

class Bind {
 public:
  virtual ~Bind() = default;

  // Which transport this is; Send only takes endpoints of this transport.
  virtual Transport transport() const = 0;

  // The local UDP port peers reach us on (0 for transports without one).
  virtual uint16_t port() const = 0;

  // Sends `datagrams` in order, batched where the transport can (UDP: sendmmsg with GSO). Returns
  // how many were refused (kernel error, relay down, queue full); the caller counts them. Never
  // blocks for long: a transport that cannot keep up drops.
  virtual size_t Send(absl::Span<const OutgoingDatagram> datagrams) = 0;

  // A descriptor that poll() reports readable while datagrams wait for Receive.
  virtual int readable_fd() const = 0;

  // Hands the datagrams waiting now (at most one burst) to `handler`, without blocking. Returns
  // how many it handed over; an error means the transport failed for good (the data plane stops).
  [[nodiscard]] virtual absl::StatusOr<size_t> Receive(DatagramHandler handler) = 0;

  // Datagrams that arrived but were dropped before Receive because the transport's bounded queue
  // was full (the receiving thread fell behind). Zero for transports whose queue is the kernel's.
  virtual uint64_t receive_dropped() const { return 0; }
};

}  // namespace tunnelmesh
