// The relay Bind: datagrams to peers reached through the coordinator's relay (relay_client.h),
// and, when given a second sender, through the SSH connections to peers (ssh_transport.h). Both
// address frames by public key while TransportEndpoint names the peer by its device id, so the Bind
// keeps an id <-> key table that its owner (the agent, as peers join and leave) maintains. One Bind
// for both keeps the data plane at two (UDP, peer-addressed); a frame's transport travels with it.
//
// Inbound frames arrive on the relay client's thread (Deliver); they are copied into a bounded
// ring of fixed-size slots and announced on an eventfd, and the data plane's inbound thread takes
// them with Receive. A frame that finds the ring full, or that does not fit a slot, is dropped and
// counted (receive_dropped()), as a socket buffer would. No allocation per frame.
//
// RelayBind does not depend on the WebSocket client: the owner passes how to send a frame, and
// feeds received frames to Deliver (from RelayClient's receive callback), so tests run it in
// memory.
//
// Thread-safety: Send, Deliver, SetPeer and RemovePeer from any thread; Receive from one thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/crypto/keys.h"
#include "node-agent/transport/bind.h"

namespace tunnelmesh {

class RelayBind final : public Bind {
 public:
  // Hands one frame to the relay for `destination`; false when it was dropped (relay down, busy).
  // Must not block: called from the data-plane threads.
  using SendFrame = std::function<bool(const PublicKey& destination, absl::Span<const uint8_t>)>;

  struct Options {
    // Frames waiting for the inbound thread; beyond this they are dropped.
    size_t queue_slots = 1024;
    // Largest frame accepted: a WireGuard message for an MTU up to 4000 bytes fits.
    size_t slot_size = 4096;
    // Most frames one Receive hands over.
    size_t burst = 64;
  };

  explicit RelayBind(SendFrame send) : RelayBind(std::move(send), Options()) {}
  RelayBind(SendFrame send, Options options, SendFrame send_ssh = nullptr);
  ~RelayBind() override;
  RelayBind(const RelayBind&) = delete;
  RelayBind& operator=(const RelayBind&) = delete;

  // The peer with device id `peer_id` has public key `key` (replacing what either had before).
  void SetPeer(uint32_t peer_id, const PublicKey& key);
  void RemovePeer(uint32_t peer_id);

  // A frame from the relay (or, with Transport::kSsh, from the SSH connection to `source`), sent
  // by `source`. Frames from keys that are not peers are ignored.
  void Deliver(const PublicKey& source, absl::Span<const uint8_t> payload,
               Transport via = Transport::kRelay);

  Transport transport() const override { return Transport::kRelay; }
  uint16_t port() const override { return 0; }
  size_t Send(absl::Span<const OutgoingDatagram> datagrams) override;
  int readable_fd() const override { return event_fd_; }
  [[nodiscard]] absl::StatusOr<size_t> Receive(DatagramHandler handler) override;
  uint64_t receive_dropped() const override {
    return receive_dropped_.load(std::memory_order_relaxed);
  }
  // Frames from keys that are not (or no longer) peers.
  uint64_t unknown_sources() const { return unknown_sources_.load(std::memory_order_relaxed); }

 private:
  uint8_t* slot(size_t i) { return slots_.data() + i * options_.slot_size; }

  const SendFrame send_;
  const SendFrame send_ssh_;
  const Options options_;
  const int event_fd_;

  mutable absl::Mutex peers_mu_;
  absl::flat_hash_map<uint32_t, PublicKey> key_by_id_ ABSL_GUARDED_BY(peers_mu_);
  absl::flat_hash_map<PublicKey, uint32_t> id_by_key_ ABSL_GUARDED_BY(peers_mu_);

  // The ring: [first_, first_ + handed_) were handed out by the last Receive and stay valid until
  // the next one; the `queued_` slots after them wait. Slot memory of queued slots is written only
  // by Deliver under ring_mu_, and of handed slots read only by the receiving thread.
  absl::Mutex ring_mu_;
  std::vector<uint8_t> slots_;
  std::vector<size_t> lengths_ ABSL_GUARDED_BY(ring_mu_);
  std::vector<uint32_t> sources_ ABSL_GUARDED_BY(ring_mu_);
  std::vector<Transport> vias_ ABSL_GUARDED_BY(ring_mu_);
  size_t first_ ABSL_GUARDED_BY(ring_mu_) = 0;
  size_t handed_ ABSL_GUARDED_BY(ring_mu_) = 0;
  size_t queued_ ABSL_GUARDED_BY(ring_mu_) = 0;

  std::atomic<uint64_t> receive_dropped_{0};
  std::atomic<uint64_t> unknown_sources_{0};
};

}  // namespace tunnelmesh
