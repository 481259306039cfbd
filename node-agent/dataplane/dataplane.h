// The agent's packet engine: moves packets between the TUN device and the UDP socket through the
// sans-IO WireGuard Device. Two threads: the outbound thread reads bursts of packets from TUN,
// routes each by destination (longest-prefix match on AllowedIPs), seals it and sends the burst with
// one sendmmsg; the inbound thread receives bursts with recvmmsg, decrypts, checks that each inner
// source address belongs to the peer that sent it, writes to TUN, and runs the protocol timers.
// No allocation per packet: buffers are allocated once per thread.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "lib/noise/device.h"
#include "lib/routing/allowed_ips.h"
#include "node-agent/dataplane/udp_socket.h"
#include "node-agent/tun/offload.h"
#include "node-agent/tun/tun_device.h"

namespace tunnelmesh {

using RouteTable = AllowedIps<noise::Peer*>;

class Dataplane {
 public:
  // Packets up to `mtu` bytes move through; `device`, `tun` and `socket` must outlive the data plane.
  Dataplane(noise::Device* device, TunDevice* tun, UdpSocket* socket, size_t mtu,
            const Clock* clock);
  ~Dataplane();

  // Publishes a new routing snapshot (which peer owns which AllowedIPs). Any thread.
  void SetRoutes(std::shared_ptr<const RouteTable> routes);
  std::shared_ptr<const RouteTable> routes() const;

  // Datagrams that are not WireGuard messages (STUN responses, discovery messages) go to
  // `handler` on the inbound thread before the WireGuard device sees them; it returns true when it
  // consumed the datagram. Set before Start.
  using ForeignHandler = std::function<bool(absl::Span<const uint8_t>, const Endpoint&)>;
  void SetForeignHandler(ForeignHandler handler) { foreign_ = std::move(handler); }

  // Datagrams for relay placeholder endpoints (relay_endpoint.h) go to `sink` instead of the UDP
  // socket, from whichever data-plane thread sends them. Set before Start.
  using RelaySink = std::function<void(uint32_t peer_id, absl::Span<const uint8_t>)>;
  void SetRelaySink(RelaySink sink) { relay_sink_ = std::move(sink); }

  // Hands a datagram that arrived another way (through the relay) to the inbound thread, which
  // treats it exactly like one from the UDP socket with source `from`. Any thread.
  void InjectInbound(absl::Span<const uint8_t> datagram, const Endpoint& from);

  // Sends one datagram from the data socket (any thread).
  bool SendRaw(absl::Span<const uint8_t> bytes, const Endpoint& to) {
    return socket_->SendTo(bytes, to);
  }

  // Starts the two threads. Call once.
  absl::Status Start();
  // Stops and joins the threads. Idempotent.
  void Stop();

  // A fatal I/O error stops the data plane; this says which (OK while running normally).
  absl::Status failure() const;
  bool running() const { return running_.load(); }

 private:
  void OutboundLoop();
  void InboundLoop();
  void Fail(absl::Status status);
  void SendNow(const Endpoint& to, absl::Span<const uint8_t> bytes);

  noise::Device* const device_;
  TunDevice* const tun_;
  UdpSocket* const socket_;
  const size_t mtu_;
  const Clock* const clock_;
  std::atomic<std::shared_ptr<const RouteTable>> routes_;
  std::atomic<bool> running_{false};
  void ProcessDatagram(uint8_t* data, size_t size, const Endpoint& from, const RouteTable& routes,
                       MonoTime now, absl::Time wall, GroCoalescer* gro);

  ForeignHandler foreign_;
  RelaySink relay_sink_;
  std::mutex inject_mu_;
  std::deque<std::pair<std::vector<uint8_t>, Endpoint>> injected_;  // Guarded by inject_mu_.
  int inject_fd_ = -1;  // eventfd: the inbound thread has injected datagrams to take.
  int stop_fd_ = -1;  // eventfd that wakes both threads for shutdown.
  std::thread outbound_;
  std::thread inbound_;
  mutable absl::Mutex failure_mu_;
  absl::Status failure_ ABSL_GUARDED_BY(failure_mu_);
};

}  // namespace tunnelmesh
