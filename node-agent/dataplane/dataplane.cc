#include "node-agent/dataplane/dataplane.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "lib/base/log.h"
#include "lib/net/packet.h"
#include "lib/wire/wireguard.h"
#include "node-agent/tun/offload.h"

namespace tunnelmesh {
namespace {

using noise::Drop;

// TUN reads per wakeup; bursts beyond this wait for the next loop iteration.
constexpr size_t kBatch = 64;
// Packet slots on the send side, and the most segments one TCP super-packet may produce.
constexpr size_t kSlots = 192;
constexpr size_t kMaxSegments = 64;
constexpr auto kTickInterval = std::chrono::milliseconds(100);

}  // namespace

Dataplane::Dataplane(noise::Device* device, TunDevice* tun, Bind* udp, Bind* relay, size_t mtu,
                     const Clock* clock)
    : device_(device), tun_(tun), udp_(udp), relay_(relay), mtu_(mtu), clock_(clock) {}

Dataplane::~Dataplane() { Stop(); }

void Dataplane::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  routes_.Store(std::move(routes));
}

std::shared_ptr<const RouteTable> Dataplane::routes() const { return routes_.Load(); }

absl::Status Dataplane::Start() {
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0) return absl::InternalError("data plane: eventfd failed");
  running_ = true;
  outbound_ = std::thread([this] { OutboundLoop(); });
  inbound_ = std::thread([this] { InboundLoop(); });
  return absl::OkStatus();
}

void Dataplane::Stop() {
  if (stop_fd_ < 0) return;
  running_ = false;
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  if (outbound_.joinable()) outbound_.join();
  if (inbound_.joinable()) inbound_.join();
  close(stop_fd_);
  stop_fd_ = -1;
}

absl::Status Dataplane::failure() const {
  absl::MutexLock lock(&failure_mu_);
  return failure_;
}

void Dataplane::Fail(absl::Status status) {
  TM_LOG_ERROR("data plane stopped: {}", status.ToString());
  {
    absl::MutexLock lock(&failure_mu_);
    if (failure_.ok()) failure_ = std::move(status);
  }
  running_ = false;
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
}

DataplaneDropCounts Dataplane::drop_counts() const {
  DataplaneDropCounts out;
  for (size_t i = 0; i < out.counts.size(); ++i)
    out.counts[i] = drops_.Get(static_cast<DataplaneDrop>(i));
  if (relay_ != nullptr) {
    out.counts[static_cast<size_t>(DataplaneDrop::kRelayQueueFull)] += relay_->receive_dropped();
  }
  return out;
}

bool Dataplane::SendRaw(absl::Span<const uint8_t> bytes, const TransportEndpoint& to) {
  Bind* bind = BindFor(to);
  const OutgoingDatagram d{bytes.data(), bytes.size(), to};
  return bind != nullptr && bind->Send(absl::Span<const OutgoingDatagram>(&d, 1)) == 0;
}

void Dataplane::SendNow(const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
  if (!SendRaw(bytes, to)) drops_.Add(DataplaneDrop::kSendFailed);
}

void Dataplane::OutboundLoop() {
  // Each slot holds header room, one packet, and room for padding and the tag. A TCP super-packet
  // from an offloading TUN fills up to kMaxSegments slots at once.
  const size_t slot_size = wire::kTransportHeaderSize + mtu_ + noise::Device::kSealTailroom + 64;
  std::vector<uint8_t> slots(kSlots * slot_size);
  auto slot = [&](size_t i) { return slots.data() + i * slot_size; };
  const bool offload = tun_->offload();
  std::vector<uint8_t> staging(offload ? VirtioNetHdr::kSize + 65536 : 0);
  uint8_t* segment_outputs[kMaxSegments];
  size_t segment_lengths[kMaxSegments];
  // Sealed datagrams of one burst, per transport, in order.
  std::vector<OutgoingDatagram> udp_out(kSlots), relay_out(kSlots);
  size_t udp_count = 0, relay_count = 0;
  size_t used = 0;  // Slots holding data since the last send; not all of them are sent.
  auto emit = [this](const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
    SendNow(to, bytes);
  };
  pollfd fds[2] = {{tun_->fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (running_) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail(absl::InternalError("poll on TUN failed"));
    }
    if (fds[1].revents) break;
    std::shared_ptr<const RouteTable> routes = routes_.Load();
    const MonoTime now = clock_->Now();
    const absl::Time wall = clock_->WallNow();
    // Filters, routes, seals and queues the packet of `length` bytes at slot +
    // kTransportHeaderSize. `filtered`: the filter saw this packet's flow already (later segments
    // of one super-packet).
    auto handle = [&](uint8_t* at, size_t length, bool filtered) {
      const absl::Span<const uint8_t> packet(at + wire::kTransportHeaderSize, length);
      if (!filtered && filter_ != nullptr && !filter_->Outbound(packet, now)) return;
      std::optional<IpAddress> destination = DestinationOf(packet);
      noise::Peer* const* owner = destination ? routes->Lookup(*destination) : nullptr;
      if (owner == nullptr) {
        if (destination) {
          drops_.Add(DataplaneDrop::kNoRoute);
        } else {
          device_->drops().Add(Drop::kInnerMalformed);
        }
        return;
      }
      size_t message_length = 0;
      TransportEndpoint to;
      if (device_->SealInPlace(*owner, at, length, now, wall, emit, &message_length, &to) !=
          noise::Device::SealResult::kSealed) {
        return;
      }
      OutgoingDatagram& out = to.is_udp() ? udp_out[udp_count++] : relay_out[relay_count++];
      out.data = at;
      out.length = message_length;
      out.to = to;
    };
    // Drain what the TUN device has queued, up to a batch, then send it in one system call.
    for (size_t reads = 0; reads < kBatch && used + kMaxSegments <= kSlots; ++reads) {
      if (!offload) {
        uint8_t* at = slot(used);
        absl::StatusOr<size_t> n =
            tun_->Read(absl::Span<uint8_t>(at + wire::kTransportHeaderSize, mtu_ + 1));
        if (!n.ok()) return Fail(n.status());
        if (*n == 0) break;
        if (*n > mtu_) {  // Larger than the interface MTU allows: someone raised the link MTU.
          drops_.Add(DataplaneDrop::kPacketTooBig);
          continue;
        }
        ++used;
        handle(at, *n, false);
        continue;
      }
      absl::StatusOr<size_t> n = tun_->Read(absl::MakeSpan(staging));
      if (!n.ok()) return Fail(n.status());
      if (*n == 0) break;
      if (*n <= VirtioNetHdr::kSize) continue;
      const VirtioNetHdr hdr = VirtioNetHdr::Read(staging.data());
      absl::Span<uint8_t> packet(staging.data() + VirtioNetHdr::kSize, *n - VirtioNetHdr::kSize);
      if (hdr.gso_type == VirtioNetHdr::kGsoNone) {
        if (packet.size() > mtu_) {
          drops_.Add(DataplaneDrop::kPacketTooBig);
          continue;
        }
        uint8_t* at = slot(used);
        std::memcpy(at + wire::kTransportHeaderSize, packet.data(), packet.size());
        if (!CompleteChecksum(
                hdr, absl::Span<uint8_t>(at + wire::kTransportHeaderSize, packet.size()))) {
          device_->drops().Add(Drop::kInnerMalformed);
          continue;
        }
        ++used;
        handle(at, packet.size(), false);
        continue;
      }
      for (size_t i = 0; i < kMaxSegments; ++i) {
        segment_outputs[i] = slot(used + i) + wire::kTransportHeaderSize;
      }
      const size_t segments =
          SplitSuperPacket(hdr, packet, mtu_, segment_outputs, absl::MakeSpan(segment_lengths));
      if (segments == 0) {
        device_->drops().Add(Drop::kInnerMalformed);
        continue;
      }
      const size_t first = used;
      used += segments;
      // Every segment of a super-packet carries the same addresses, protocol and ports: the filter
      // decides on the first, and the rest share its verdict (a refused first segment refuses
      // them all).
      if (filter_ != nullptr &&
          !filter_->Outbound(absl::Span<const uint8_t>(slot(first) + wire::kTransportHeaderSize,
                                                       segment_lengths[0]),
                             now)) {
        continue;
      }
      for (size_t i = 0; i < segments; ++i) handle(slot(first + i), segment_lengths[i], true);
    }
    if (udp_count > 0) {
      const size_t refused = udp_->Send(absl::MakeConstSpan(udp_out.data(), udp_count));
      if (refused > 0) drops_.Add(DataplaneDrop::kSendFailed, refused);
      udp_count = 0;
    }
    if (relay_count > 0) {
      const size_t refused = relay_ != nullptr
                                 ? relay_->Send(absl::MakeConstSpan(relay_out.data(), relay_count))
                                 : relay_count;
      if (refused > 0) drops_.Add(DataplaneDrop::kSendFailed, refused);
      relay_count = 0;
    }
    used = 0;
  }
}

void Dataplane::ProcessDatagram(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                                const RouteTable& routes, MonoTime now, absl::Time wall,
                                GroCoalescer* gro) {
  auto emit = [this](const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
    SendNow(to, bytes);
  };
  uint8_t* const data = datagram.data();
  const size_t size = datagram.size();
  // WireGuard messages start with a type of 1-4 and three zero bytes; anything else may be ours
  // (STUN, discovery).
  const bool wireguard =
      size >= 4 && data[0] >= 1 && data[0] <= 4 && data[1] == 0 && data[2] == 0 && data[3] == 0;
  if (foreign_ && !wireguard && foreign_(absl::Span<const uint8_t>(data, size), from)) return;
  noise::Device::Received r = device_->Receive(datagram, from, now, wall, emit);
  if (r.kind != noise::Device::Received::Kind::kPacket) return;
  absl::Span<const uint8_t> packet(data + wire::kTransportHeaderSize, r.packet_length);
  // Cryptokey routing: the inner source must be an address this peer is allowed to use.
  std::optional<IpAddress> source = SourceOf(packet);
  noise::Peer* const* owner = source ? routes.Lookup(*source) : nullptr;
  if (owner == nullptr || *owner != r.peer) {
    device_->drops().Add(source ? Drop::kSourceNotAllowed : Drop::kInnerMalformed);
    return;
  }
  // PeerPolicy: before GRO, so each segment is judged on its own (the filter counts its drops).
  if (filter_ != nullptr && !filter_->Inbound(packet, now)) return;
  if (gro != nullptr) {
    // The 16 bytes of transport header before the packet are the virtio header's room.
    gro->Add(data + wire::kTransportHeaderSize, r.packet_length,
             [this](absl::Span<const iovec> parts) {
               if (!tun_->WriteV(parts).ok()) drops_.Add(DataplaneDrop::kTunWriteFailed);
             });
  } else if (!tun_->Write(packet).ok()) {
    drops_.Add(DataplaneDrop::kTunWriteFailed);
  }
}

void Dataplane::InboundLoop() {
  auto emit = [this](const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
    SendNow(to, bytes);
  };
  // With an offloading TUN, in-order TCP segments are merged into super-packets before the write.
  GroCoalescer coalescer;
  GroCoalescer* gro = tun_->offload() ? &coalescer : nullptr;
  auto write = [this](absl::Span<const iovec> parts) {
    if (!tun_->WriteV(parts).ok()) drops_.Add(DataplaneDrop::kTunWriteFailed);
  };
  Bind* const binds[2] = {udp_, relay_};
  const size_t bind_count = relay_ != nullptr ? 2 : 1;
  pollfd fds[3] = {{stop_fd_, POLLIN, 0},
                   {udp_->readable_fd(), POLLIN, 0},
                   {relay_ != nullptr ? relay_->readable_fd() : -1, POLLIN, 0}};
  MonoTime next_tick = clock_->Now();
  while (running_) {
    MonoTime now = clock_->Now();
    if (now >= next_tick) {
      device_->Tick(now, clock_->WallNow(), emit);
      next_tick = now + kTickInterval;
    }
    const int timeout_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now).count() + 1);
    if (poll(fds, 1 + bind_count, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      return Fail(absl::InternalError("poll on the transports failed"));
    }
    if (fds[0].revents) break;
    std::shared_ptr<const RouteTable> routes = routes_.Load();
    now = clock_->Now();
    const absl::Time wall = clock_->WallNow();
    for (size_t b = 0; b < bind_count; ++b) {
      if (!(fds[1 + b].revents & POLLIN)) continue;
      absl::StatusOr<size_t> received =
          binds[b]->Receive([&](absl::Span<uint8_t> datagram, const TransportEndpoint& from) {
            ProcessDatagram(datagram, from, *routes, now, wall, gro);
          });
      if (!received.ok()) return Fail(received.status());
      // The coalescer points into the Bind's buffers, valid until its next Receive: write now.
      if (gro != nullptr) gro->Flush(write);
    }
  }
}

}  // namespace tunnelmesh
