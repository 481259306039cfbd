#include "node-agent/dataplane/dataplane.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lib/base/log.h"
#include "lib/net/packet.h"
#include "lib/wire/wireguard.h"

namespace tunnelmesh {
namespace {

using noise::Drop;

// Datagrams per system call. Bursts beyond this wait for the next loop iteration.
constexpr size_t kBatch = 64;
constexpr auto kTickInterval = std::chrono::milliseconds(100);

}  // namespace

Dataplane::Dataplane(noise::Device* device, TunDevice* tun, UdpSocket* socket, size_t mtu,
                     const Clock* clock)
    : device_(device), tun_(tun), socket_(socket), mtu_(mtu), clock_(clock) {
  routes_.store(std::make_shared<const RouteTable>());
}

Dataplane::~Dataplane() { Stop(); }

void Dataplane::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  routes_.store(std::move(routes));
}

std::shared_ptr<const RouteTable> Dataplane::routes() const { return routes_.load(); }

absl::Status Dataplane::Start() {
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0) return absl::InternalError("eventfd failed");
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

void Dataplane::SendNow(const Endpoint& to, absl::Span<const uint8_t> bytes) {
  if (!socket_->SendTo(bytes, to)) device_->drops().Add(Drop::kSendFailed);
}

void Dataplane::OutboundLoop() {
  // Each slot holds header room, the packet, and room for padding and the tag.
  const size_t slot_size = wire::kTransportHeaderSize + mtu_ + noise::Device::kSealTailroom + 64;
  std::vector<uint8_t> buffers(kBatch * slot_size);
  SendBatch batch(kBatch);
  auto emit = [this](const Endpoint& to, absl::Span<const uint8_t> bytes) { SendNow(to, bytes); };
  pollfd fds[2] = {{tun_->fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (running_) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail(absl::InternalError("poll on TUN failed"));
    }
    if (fds[1].revents) break;
    std::shared_ptr<const RouteTable> routes = routes_.load();
    const MonoTime now = clock_->Now();
    const absl::Time wall = clock_->WallNow();
    // Drain what the TUN device has queued, up to one batch, then send it in one system call.
    for (size_t i = 0; i < kBatch; ++i) {
      uint8_t* slot = buffers.data() + batch.datagrams() * slot_size;
      absl::StatusOr<size_t> n =
          tun_->Read(absl::Span<uint8_t>(slot + wire::kTransportHeaderSize, mtu_ + 1));
      if (!n.ok()) return Fail(n.status());
      if (*n == 0) break;
      if (*n > mtu_) continue;  // Larger than the interface MTU allows: cannot be ours to send.
      std::optional<IpAddress> destination =
          DestinationOf(absl::Span<const uint8_t>(slot + wire::kTransportHeaderSize, *n));
      noise::Peer* const* owner = destination ? routes->Lookup(*destination) : nullptr;
      if (owner == nullptr) {
        device_->drops().Add(destination ? Drop::kNoRoute : Drop::kInnerMalformed);
        continue;
      }
      size_t length = 0;
      Endpoint to;
      if (device_->SealInPlace(*owner, slot, *n, now, wall, emit, &length, &to) ==
          noise::Device::SealResult::kSealed) {
        batch.Add(slot, length, to);
      }
    }
    if (batch.datagrams() > 0) {
      const size_t refused = socket_->Send(&batch);
      if (refused > 0) device_->drops().Add(Drop::kSendFailed, refused);
      batch.Clear();
    }
  }
}

void Dataplane::InboundLoop() {
  // GRO hands over up to 64 KiB per slot.
  RecvBatch batch(kBatch / 4, 65536);
  auto emit = [this](const Endpoint& to, absl::Span<const uint8_t> bytes) { SendNow(to, bytes); };
  pollfd fds[2] = {{socket_->fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  MonoTime next_tick = clock_->Now();
  while (running_) {
    MonoTime now = clock_->Now();
    if (now >= next_tick) {
      device_->Tick(now, clock_->WallNow(), emit);
      next_tick = now + kTickInterval;
    }
    const int timeout_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now).count() + 1);
    if (poll(fds, 2, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      return Fail(absl::InternalError("poll on UDP socket failed"));
    }
    if (fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) continue;
    absl::StatusOr<size_t> received = socket_->Receive(&batch);
    if (!received.ok()) return Fail(received.status());
    if (*received == 0) continue;
    std::shared_ptr<const RouteTable> routes = routes_.load();
    now = clock_->Now();
    const absl::Time wall = clock_->WallNow();
    for (size_t i = 0; i < *received; ++i) {
      absl::StatusOr<Endpoint> from = batch.source(i);
      if (!from.ok()) {
        device_->drops().Add(Drop::kMalformed);
        continue;
      }
      const size_t total = batch.length(i);
      const size_t segment = batch.segment_size(i) ? batch.segment_size(i) : total;
      for (size_t offset = 0; offset < total; offset += segment) {
        const size_t size = std::min(segment, total - offset);
        uint8_t* data = batch.data(i) + offset;
        noise::Device::Received r =
            device_->Receive(absl::Span<uint8_t>(data, size), *from, now, wall, emit);
        if (r.kind != noise::Device::Received::Kind::kPacket) continue;
        absl::Span<const uint8_t> packet(data + wire::kTransportHeaderSize, r.packet_length);
        // Cryptokey routing: the inner source must be an address this peer is allowed to use.
        std::optional<IpAddress> source = SourceOf(packet);
        noise::Peer* const* owner = source ? routes->Lookup(*source) : nullptr;
        if (owner == nullptr || *owner != r.peer) {
          device_->drops().Add(source ? Drop::kSourceNotAllowed : Drop::kInnerMalformed);
          continue;
        }
        if (!tun_->Write(packet).ok()) device_->drops().Add(Drop::kTunWriteFailed);
      }
    }
  }
}

}  // namespace tunnelmesh
