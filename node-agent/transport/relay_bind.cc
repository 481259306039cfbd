#include "node-agent/transport/relay_bind.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace tunnelmesh {

RelayBind::RelayBind(SendFrame send, Options options, SendFrame send_ssh)
    : send_(std::move(send)),
      send_ssh_(std::move(send_ssh)),
      options_(options),
      event_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      slots_(options.queue_slots * options.slot_size),
      lengths_(options.queue_slots),
      sources_(options.queue_slots),
      vias_(options.queue_slots) {}

RelayBind::~RelayBind() {
  if (event_fd_ >= 0) close(event_fd_);
}

void RelayBind::SetPeer(uint32_t peer_id, const PublicKey& key) {
  absl::MutexLock lock(&peers_mu_);
  if (auto old = key_by_id_.find(peer_id); old != key_by_id_.end()) id_by_key_.erase(old->second);
  if (auto old = id_by_key_.find(key); old != id_by_key_.end()) key_by_id_.erase(old->second);
  key_by_id_[peer_id] = key;
  id_by_key_[key] = peer_id;
}

void RelayBind::RemovePeer(uint32_t peer_id) {
  absl::MutexLock lock(&peers_mu_);
  auto it = key_by_id_.find(peer_id);
  if (it == key_by_id_.end()) return;
  id_by_key_.erase(it->second);
  key_by_id_.erase(it);
}

size_t RelayBind::Send(absl::Span<const OutgoingDatagram> datagrams) {
  size_t refused = 0;
  for (const OutgoingDatagram& d : datagrams) {
    PublicKey key;
    bool known = false;
    const SendFrame& send = d.to.is_ssh() ? send_ssh_ : send_;
    if (!d.to.is_udp() && send) {
      absl::ReaderMutexLock lock(&peers_mu_);
      auto it = key_by_id_.find(d.to.relay_peer_id());
      if (it != key_by_id_.end()) {
        key = it->second;
        known = true;
      }
    }
    // The frame goes out after the table lock is released: the relay client may take its own.
    if (!known || !send(key, absl::Span<const uint8_t>(d.data, d.length))) ++refused;
  }
  return refused;
}

void RelayBind::Deliver(const PublicKey& source, absl::Span<const uint8_t> payload, Transport via) {
  uint32_t peer_id = 0;
  {
    absl::ReaderMutexLock lock(&peers_mu_);
    auto it = id_by_key_.find(source);
    if (it == id_by_key_.end()) {
      unknown_sources_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    peer_id = it->second;
  }
  if (payload.size() > options_.slot_size) {
    receive_dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  absl::MutexLock lock(&ring_mu_);
  if (handed_ + queued_ >= options_.queue_slots) {
    receive_dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const size_t at = (first_ + handed_ + queued_) % options_.queue_slots;
  std::memcpy(slot(at), payload.data(), payload.size());
  lengths_[at] = payload.size();
  sources_[at] = peer_id;
  vias_[at] = via;
  // The descriptor is readable exactly while frames are queued; both sides change it under the
  // lock, so one write per burst is enough.
  if (queued_++ == 0) {
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof(one));
  }
}

absl::StatusOr<size_t> RelayBind::Receive(DatagramHandler handler) {
  if (event_fd_ < 0) return absl::InternalError("relay transport: eventfd could not be created");
  size_t start = 0;
  size_t count = 0;
  uint32_t sources[256];
  size_t lengths[256];
  Transport vias[256];
  {
    absl::MutexLock lock(&ring_mu_);
    // The slots of the previous burst are released now (the contract of DatagramHandler).
    first_ = (first_ + handed_) % options_.queue_slots;
    handed_ = 0;
    uint64_t ignored;
    (void)!read(event_fd_, &ignored, sizeof(ignored));
    count = std::min({queued_, options_.burst, sizeof(sources) / sizeof(sources[0])});
    start = first_;
    for (size_t i = 0; i < count; ++i) {
      const size_t at = (start + i) % options_.queue_slots;
      sources[i] = sources_[at];
      lengths[i] = lengths_[at];
      vias[i] = vias_[at];
    }
    handed_ = count;
    queued_ -= count;
    if (queued_ > 0) {
      const uint64_t one = 1;
      (void)!write(event_fd_, &one, sizeof(one));
    }
  }
  for (size_t i = 0; i < count; ++i) {
    const size_t at = (start + i) % options_.queue_slots;
    handler(absl::Span<uint8_t>(slot(at), lengths[i]), vias[i] == Transport::kSsh
                                                           ? TransportEndpoint::Ssh(sources[i])
                                                           : TransportEndpoint::Relay(sources[i]));
  }
  return count;
}

}  // namespace tunnelmesh
