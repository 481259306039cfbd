// The agent's packet engine: moves packets between the TUN device and the transports (Binds: the
// UDP socket, and the relay when there is one) through the sans-IO WireGuard Device. Two threads:
// the outbound thread reads bursts of packets from TUN, routes each by destination (longest-prefix
// match on AllowedIPs), seals it and sends the burst on the Bind of each destination's transport
// (UDP: one sendmmsg); the inbound thread polls every Bind, decrypts what they hand over, checks
// that each inner source address belongs to the peer that sent it, writes to TUN, and runs the
// protocol timers. No allocation per packet: buffers are allocated once per thread.
//
// With a packet filter (SetFilter; lib/filter/filter.h), the inbound thread asks
// Filter::Inbound about each packet after the source check and before the TUN write (and before
// GRO merges segments), and the outbound thread asks Filter::Outbound before sealing; the filter
// counts its own drops. The filter swaps its rules itself, so the data plane never stops for a new
// rule set.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/snapshot.h"
#include "lib/filter/filter.h"
#include "lib/noise/device.h"
#include "lib/routing/allowed_ips.h"
#include "node-agent/dataplane/counters.h"
#include "node-agent/transport/bind.h"
#include "node-agent/tun/offload.h"
#include "node-agent/tun/tun_device.h"

namespace tunnelmesh {

using RouteTable = AllowedIps<noise::Peer*>;

class Dataplane {
 public:
  // Packets up to `mtu` bytes move through. `udp` is required; `relay` (the peer-addressed Bind,
  // carrying relay and SSH endpoints) may be null (datagrams for relay and SSH endpoints are then
  // dropped as send_failed). Everything must outlive the data plane.
  Dataplane(noise::Device* device, TunDevice* tun, Bind* udp, Bind* relay, size_t mtu,
            const Clock* clock);
  ~Dataplane();

  // Publishes a new routing snapshot (which peer owns which AllowedIPs). Any thread.
  void SetRoutes(std::shared_ptr<const RouteTable> routes);
  std::shared_ptr<const RouteTable> routes() const;

  // Datagrams that are not WireGuard messages (STUN responses, discovery messages) go to
  // `handler` on the inbound thread before the WireGuard device sees them; it returns true when it
  // consumed the datagram. Set before Start.
  using ForeignHandler =
      std::function<bool(absl::Span<const uint8_t>, const TransportEndpoint& from)>;
  void SetForeignHandler(ForeignHandler handler) { foreign_ = std::move(handler); }

  // The packet filter both threads consult (null: none, everything passes). Set before Start;
  // `filter` must outlive the data plane.
  void SetFilter(filter::Filter* filter) { filter_ = filter; }

  // Sends one datagram (disco, STUN) on the Bind of `to`'s transport. Any thread.
  bool SendRaw(absl::Span<const uint8_t> bytes, const TransportEndpoint& to);

  // Starts the two threads. Call once.
  [[nodiscard]] absl::Status Start();
  // Stops and joins the threads. Idempotent.
  void Stop();

  // A fatal I/O error stops the data plane; this says which (OK while running normally).
  absl::Status failure() const;
  bool running() const { return running_.load(); }

  // The data plane's drop counters (the protocol's are in device->drops()).
  const DataplaneDropCounters& drops() const { return drops_; }
  // All of them at once, relay_queue_full included (counted by the relay Bind). Any thread.
  DataplaneDropCounts drop_counts() const;

 private:
  void OutboundLoop();
  void InboundLoop();
  void Fail(absl::Status status);
  Bind* BindFor(const TransportEndpoint& to) const { return to.is_udp() ? udp_ : relay_; }
  void SendNow(const TransportEndpoint& to, absl::Span<const uint8_t> bytes);
  void ProcessDatagram(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                       const RouteTable& routes, MonoTime now, absl::Time wall, GroCoalescer* gro);

  noise::Device* const device_;
  TunDevice* const tun_;
  Bind* const udp_;
  Bind* const relay_;
  const size_t mtu_;
  const Clock* const clock_;
  Snapshot<RouteTable> routes_{std::make_shared<const RouteTable>()};
  std::atomic<bool> running_{false};
  DataplaneDropCounters drops_;

  ForeignHandler foreign_;
  filter::Filter* filter_ = nullptr;
  int stop_fd_ = -1;  // eventfd that wakes both threads for shutdown.
  std::thread outbound_;
  std::thread inbound_;
  mutable absl::Mutex failure_mu_;
  absl::Status failure_ ABSL_GUARDED_BY(failure_mu_);
};

}  // namespace tunnelmesh
