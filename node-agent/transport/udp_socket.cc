#include "node-agent/transport/udp_socket.h"

#include <errno.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace tunnelmesh {
namespace {

constexpr int kSocketBufferBytes = 8 << 20;
// Kernel limits for one GSO send: segments per call and bytes of UDP payload.
constexpr size_t kMaxSegments = 64;
constexpr size_t kMaxGsoBytes = 65000;

absl::StatusOr<int> BindDualStack(uint16_t port) {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::string("creating UDP socket: ") + strerror(errno));
  int off = 0;
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  // Large buffers absorb bursts between batches; the FORCE variants work when we are privileged.
  int size = kSocketBufferBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  }
  // Receive coalesced bursts; without kernel support datagrams simply arrive one by one.
  int on = 1;
  setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on));
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_any;
  addr.sin6_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    if (err == EADDRINUSE) {
      return absl::AlreadyExistsError("UDP port " + std::to_string(port) + " is in use");
    }
    return absl::InternalError("binding UDP port " + std::to_string(port) + ": " + strerror(err));
  }
  return fd;
}

}  // namespace

// Rebuilds `batch` from message `from` on as one datagram per message, and keeps it that way.
void SplitIntoSingles(SendBatch* batch, size_t from) {
  std::vector<std::pair<iovec, Endpoint>> rest;
  for (size_t k = from; k < batch->message_count_; ++k) {
    const SendBatch::Message& m = batch->pending_[k];
    for (size_t j = 0; j < m.iov_count; ++j) {
      rest.push_back({batch->iovecs_[m.first_iov + j], m.to});
    }
  }
  batch->Clear();
  batch->coalesce_ = false;
  for (auto& [iov, to] : rest) batch->Add(static_cast<uint8_t*>(iov.iov_base), iov.iov_len, to);
}

RecvBatch::RecvBatch(size_t slots, size_t slot_size)
    : slot_size_(slot_size),
      buffers_(slots * slot_size),
      messages_(slots),
      iovecs_(slots),
      addresses_(slots),
      control_(slots * kControlSize),
      segment_sizes_(slots) {
  for (size_t i = 0; i < slots; ++i) {
    std::memset(&messages_[i], 0, sizeof(mmsghdr));
    iovecs_[i] = iovec{data(i), slot_size_};
    messages_[i].msg_hdr.msg_iov = &iovecs_[i];
    messages_[i].msg_hdr.msg_iovlen = 1;
    messages_[i].msg_hdr.msg_name = &addresses_[i];
  }
}

SendBatch::SendBatch(size_t max_datagrams)
    : iovecs_(max_datagrams),
      pending_(max_datagrams),
      messages_(max_datagrams),
      addresses_(max_datagrams),
      control_(max_datagrams * kControlSize) {}

void SendBatch::Clear() {
  iov_count_ = 0;
  message_count_ = 0;
}

void SendBatch::Add(const uint8_t* data, size_t length, const Endpoint& to) {
  const size_t iov = iov_count_++;
  iovecs_[iov] = iovec{const_cast<uint8_t*>(data), length};
  if (coalesce_ && message_count_ > 0) {
    Message& last = pending_[message_count_ - 1];
    if (!last.closed && last.to == to && last.iov_count < kMaxSegments &&
        last.total + length <= kMaxGsoBytes && length <= last.segment_size) {
      ++last.iov_count;
      last.total += length;
      last.closed = length < last.segment_size;
      return;
    }
  }
  Message& m = pending_[message_count_++];
  m.to = to;
  m.first_iov = iov;
  m.iov_count = 1;
  m.segment_size = length;
  m.total = length;
  m.closed = false;
}

absl::StatusOr<std::unique_ptr<UdpSocket>> UdpSocket::Open(uint16_t port, bool fall_back_to_any) {
  absl::StatusOr<int> fd = BindDualStack(port);
  if (!fd.ok() && fd.status().code() == absl::StatusCode::kAlreadyExists && fall_back_to_any) {
    fd = BindDualStack(0);
  }
  if (!fd.ok()) return fd.status();
  sockaddr_in6 bound{};
  socklen_t len = sizeof(bound);
  getsockname(*fd, reinterpret_cast<sockaddr*>(&bound), &len);
  return std::unique_ptr<UdpSocket>(new UdpSocket(*fd, ntohs(bound.sin6_port)));
}

UdpSocket::~UdpSocket() { close(fd_); }

absl::StatusOr<size_t> UdpSocket::Receive(RecvBatch* batch) {
  const size_t slots = batch->messages_.size();
  for (size_t i = 0; i < slots; ++i) {
    msghdr& h = batch->messages_[i].msg_hdr;
    h.msg_namelen = sizeof(sockaddr_in6);
    h.msg_control = batch->control_.data() + i * RecvBatch::kControlSize;
    h.msg_controllen = RecvBatch::kControlSize;
    batch->messages_[i].msg_len = 0;
  }
  batch->count_ = 0;
  int n = recvmmsg(fd_, batch->messages_.data(), slots, MSG_DONTWAIT, nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    // ICMP errors (port unreachable from a peer that went away) surface here; they are not fatal.
    if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) return 0;
    return absl::InternalError(std::string("recvmmsg: ") + strerror(errno));
  }
  for (int i = 0; i < n; ++i) {
    size_t segment = 0;
    msghdr& h = batch->messages_[i].msg_hdr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int size = 0;
        std::memcpy(&size, CMSG_DATA(c), sizeof(size));
        if (size > 0) segment = static_cast<size_t>(size);
      }
    }
    batch->segment_sizes_[i] = segment;
  }
  batch->count_ = static_cast<size_t>(n);
  return batch->count_;
}

size_t UdpSocket::SendMessages(SendBatch* batch, size_t from) {
  // Build the mmsghdrs for messages [from, message_count_).
  const bool gso = gso_.load(std::memory_order_relaxed);
  for (size_t i = from; i < batch->message_count_; ++i) {
    const SendBatch::Message& m = batch->pending_[i];
    msghdr& h = batch->messages_[i].msg_hdr;
    std::memset(&h, 0, sizeof(h));
    h.msg_name = &batch->addresses_[i];
    h.msg_namelen = m.to.ToSockaddrV6(&batch->addresses_[i]);
    h.msg_iov = &batch->iovecs_[m.first_iov];
    h.msg_iovlen = m.iov_count;
    if (m.iov_count > 1 && gso) {
      h.msg_control = batch->control_.data() + i * SendBatch::kControlSize;
      h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t segment = static_cast<uint16_t>(m.segment_size);
      std::memcpy(CMSG_DATA(c), &segment, sizeof(segment));
    }
  }
  size_t refused = 0;
  size_t i = from;
  while (i < batch->message_count_) {
    int n = sendmmsg(fd_, batch->messages_.data() + i, batch->message_count_ - i, 0);
    if (n > 0) {
      i += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if ((errno == EIO || errno == EINVAL || errno == EOPNOTSUPP) &&
        batch->pending_[i].iov_count > 1 && gso_.exchange(false)) {
      // This path cannot do GSO: send every datagram of this message on its own from now on.
      break;
    }
    refused += batch->pending_[i].iov_count;  // Skip the message the kernel refused and go on.
    ++i;
  }
  if (i < batch->message_count_) {
    // GSO was just switched off: send the rest as single datagrams.
    SplitIntoSingles(batch, i);
    refused += SendMessages(batch, 0);
  }
  return refused;
}

size_t UdpSocket::Send(SendBatch* batch) {
  if (batch->coalesce_ && !gso_.load(std::memory_order_relaxed)) SplitIntoSingles(batch, 0);
  return SendMessages(batch, 0);
}

bool UdpSocket::SendTo(absl::Span<const uint8_t> data, const Endpoint& to) {
  sockaddr_in6 addr;
  socklen_t len = to.ToSockaddrV6(&addr);
  return sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&addr), len) ==
         static_cast<ssize_t>(data.size());
}

}  // namespace tunnelmesh
