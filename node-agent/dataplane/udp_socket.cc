#include "node-agent/dataplane/udp_socket.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace tunnelmesh {
namespace {

constexpr int kSocketBufferBytes = 8 << 20;

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

DatagramBatch::DatagramBatch(size_t slots, size_t slot_size)
    : slot_size_(slot_size),
      buffers_(slots * slot_size),
      messages_(slots),
      iovecs_(slots),
      addresses_(slots) {
  for (size_t i = 0; i < slots; ++i) {
    iovecs_[i] = iovec{slot(i), slot_size};
    std::memset(&messages_[i], 0, sizeof(mmsghdr));
    messages_[i].msg_hdr.msg_iov = &iovecs_[i];
    messages_[i].msg_hdr.msg_iovlen = 1;
    messages_[i].msg_hdr.msg_name = &addresses_[i];
  }
}

void DatagramBatch::PrepareForReceive() {
  for (size_t i = 0; i < messages_.size(); ++i) {
    iovecs_[i] = iovec{slot(i), slot_size_};
    messages_[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
    messages_[i].msg_len = 0;
  }
  count_ = 0;
}

void DatagramBatch::Add(const uint8_t* data, size_t length, const Endpoint& to) {
  const size_t i = count_++;
  iovecs_[i] = iovec{const_cast<uint8_t*>(data), length};
  messages_[i].msg_hdr.msg_namelen = to.ToSockaddrV6(&addresses_[i]);
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

absl::StatusOr<size_t> UdpSocket::RecvBatch(DatagramBatch* batch) {
  batch->PrepareForReceive();
  int n = recvmmsg(fd_, batch->messages_.data(), batch->messages_.size(), MSG_DONTWAIT, nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    // ICMP errors (port unreachable from a peer that went away) surface here; they are not fatal.
    if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) return 0;
    return absl::InternalError(std::string("recvmmsg: ") + strerror(errno));
  }
  batch->count_ = static_cast<size_t>(n);
  return batch->count_;
}

size_t UdpSocket::SendBatch(DatagramBatch* batch) {
  size_t sent = 0;
  while (sent < batch->count_) {
    int n = sendmmsg(fd_, batch->messages_.data() + sent, batch->count_ - sent, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      // Skip the datagram the kernel refused (e.g. unreachable destination) and go on.
      ++sent;
      continue;
    }
    sent += static_cast<size_t>(n);
  }
  return sent;
}

bool UdpSocket::SendTo(absl::Span<const uint8_t> data, const Endpoint& to) {
  sockaddr_in6 addr;
  socklen_t len = to.ToSockaddrV6(&addr);
  return sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&addr), len) ==
         static_cast<ssize_t>(data.size());
}

}  // namespace tunnelmesh
