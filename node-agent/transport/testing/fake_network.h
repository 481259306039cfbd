// FakeNetwork: an in-memory IP network for unit tests of everything that sends on a Bind (the data
// plane, discovery, STUN), after wireguard-go's bindtest and Tailscale's natlab. Hosts get a
// FakeUdpBind at an address; datagrams between them are delivered at once or, with a latency, when
// the test advances its fake clock and calls DeliverDue(). Loss is drawn from a seeded generator,
// and links between two addresses can be cut and restored. NATs (nat/testing/fake_nat.h) join two
// networks: they receive what a LAN sends off-net (the default route) and what the outside sends
// to their public address.
//
// Thread-safe: the data plane's threads send while the test thread inspects. No lock is held
// while a datagram is handed to its receiver, so NATs may forward into another network.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/clock.h"
#include "lib/net/ip.h"
#include "node-agent/transport/bind.h"

namespace tunnelmesh {

class FakeNetwork;

// Total order on endpoints for the fakes' tables (Endpoint has only ==).
struct EndpointLess {
  bool operator()(const Endpoint& a, const Endpoint& b) const {
    if (a.address() == b.address()) return a.port() < b.port();
    return a.address() < b.address();
  }
};

// Anything datagrams are delivered to: a host's Bind, or a NAT.
class FakeNetworkReceiver {
 public:
  virtual ~FakeNetworkReceiver() = default;
  // `bytes` are valid only during the call.
  virtual void Arrive(FakeNetwork* network, const Endpoint& from, const Endpoint& to,
                      absl::Span<const uint8_t> bytes) = 0;
};

struct FakeNetworkOptions {
  // One-way delay of every datagram; zero delivers inside Send.
  Duration latency{0};
  // Probability in [0, 1] that a datagram is lost, drawn from a generator seeded with `seed`.
  double loss = 0;
  uint64_t seed = 1;
};

struct FakeNetworkStats {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  uint64_t lost = 0;         // Drawn as lost.
  uint64_t cut = 0;          // Between two addresses whose link is cut.
  uint64_t unreachable = 0;  // No host at the destination and no default route.
};

class FakeNetwork {
 public:
  // `clock` times latency (and is what the NATs use for mapping timeouts); it must outlive us.
  explicit FakeNetwork(const Clock* clock, FakeNetworkOptions options = {});
  FakeNetwork(const FakeNetwork&) = delete;
  FakeNetwork& operator=(const FakeNetwork&) = delete;

  const Clock* clock() const { return clock_; }

  // Datagrams to `endpoint` go to `receiver` (a host's Bind). Replaces any earlier one.
  void Attach(const Endpoint& endpoint, FakeNetworkReceiver* receiver);
  // Datagrams to any port of `address` go to `receiver` (a NAT's public address).
  void AttachAddress(const IpAddress& address, FakeNetworkReceiver* receiver);
  // Datagrams to addresses nobody is attached at go to `receiver` (the LAN's NAT); null: dropped.
  void SetDefaultRoute(FakeNetworkReceiver* receiver);
  // Removes `receiver` wherever it is attached.
  void Detach(FakeNetworkReceiver* receiver);

  // Sends one datagram; it arrives now or after the latency, unless lost, cut or unreachable.
  void Send(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes);

  // Delivers every delayed datagram due at the clock's current time, oldest first. Returns how
  // many were delivered (or dropped on arrival).
  size_t DeliverDue();

  // Cuts the link between two addresses (both directions) until Restore.
  void Cut(const IpAddress& a, const IpAddress& b);
  void Restore(const IpAddress& a, const IpAddress& b);

  FakeNetworkStats stats() const;

 private:
  struct InFlight {
    MonoTime due;
    Endpoint from, to;
    std::vector<uint8_t> bytes;
  };
  static std::pair<IpAddress, IpAddress> LinkKey(const IpAddress& a, const IpAddress& b);
  // The receiver for `to`, or null (counted as unreachable).
  FakeNetworkReceiver* Route(const Endpoint& to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Deliver(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes);

  const Clock* const clock_;
  const FakeNetworkOptions options_;

  mutable absl::Mutex mu_;
  std::map<Endpoint, FakeNetworkReceiver*, EndpointLess> hosts_ ABSL_GUARDED_BY(mu_);
  std::map<IpAddress, FakeNetworkReceiver*> addresses_ ABSL_GUARDED_BY(mu_);
  FakeNetworkReceiver* default_route_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::set<std::pair<IpAddress, IpAddress>> cut_ ABSL_GUARDED_BY(mu_);
  std::deque<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);  // In order of `due` (fixed latency).
  std::mt19937_64 random_ ABSL_GUARDED_BY(mu_);
  FakeNetworkStats stats_ ABSL_GUARDED_BY(mu_);
};

// A host's UDP socket on a FakeNetwork. readable_fd() is an eventfd readable exactly while
// datagrams wait, so the data plane polls it unchanged. The inbox is bounded like a socket buffer.
class FakeUdpBind final : public Bind, public FakeNetworkReceiver {
 public:
  static constexpr size_t kInboxLimit = 4096;
  static constexpr size_t kBurst = 64;

  // Attaches at `local` on `network` (which must outlive the Bind). Aborts if no eventfd can be
  // created (the test could not run anyway).
  FakeUdpBind(FakeNetwork* network, const Endpoint& local);
  ~FakeUdpBind() override;
  FakeUdpBind(const FakeUdpBind&) = delete;
  FakeUdpBind& operator=(const FakeUdpBind&) = delete;

  const Endpoint& local() const { return local_; }

  // Bind.
  Transport transport() const override { return Transport::kUdp; }
  uint16_t port() const override { return local_.port(); }
  size_t Send(absl::Span<const OutgoingDatagram> datagrams) override;
  int readable_fd() const override { return event_fd_; }
  [[nodiscard]] absl::StatusOr<size_t> Receive(DatagramHandler handler) override;
  uint64_t receive_dropped() const override;

  // FakeNetworkReceiver.
  void Arrive(FakeNetwork* network, const Endpoint& from, const Endpoint& to,
              absl::Span<const uint8_t> bytes) override;

  // Datagrams waiting for Receive.
  size_t pending() const;

 private:
  struct Datagram {
    Endpoint from;
    std::vector<uint8_t> bytes;
  };

  FakeNetwork* const network_;
  const Endpoint local_;
  const int event_fd_;
  mutable absl::Mutex mu_;
  std::deque<Datagram> inbox_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  // The last burst handed to the receiver, kept until the next Receive (Bind's contract).
  std::vector<Datagram> handed_;
};

}  // namespace tunnelmesh
