// The data plane's UDP socket: one dual-stack (IPv6 with IPv4-mapped addresses) socket, bound to the
// listen port, with batched receive and send (recvmmsg/sendmmsg) so a system call moves many
// datagrams. Thread-safe for one receiving thread plus any number of sending threads.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

// A fixed set of datagram slots for one recvmmsg or sendmmsg call. Allocated once; reused forever.
class DatagramBatch {
 public:
  DatagramBatch(size_t slots, size_t slot_size);

  size_t capacity() const { return messages_.size(); }
  size_t slot_size() const { return slot_size_; }
  uint8_t* slot(size_t i) { return buffers_.data() + i * slot_size_; }

  // Receive side: after RecvBatch, datagrams [0, count()) hold data of length(i) from source(i).
  size_t count() const { return count_; }
  size_t length(size_t i) const { return messages_[i].msg_len; }
  absl::StatusOr<Endpoint> source(size_t i) const {
    return Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&addresses_[i]),
                                  messages_[i].msg_hdr.msg_namelen);
  }

  // Send side: fill slots with Add, then SendBatch, then Clear.
  void Add(const uint8_t* data, size_t length, const Endpoint& to);
  void Clear() { count_ = 0; }
  bool full() const { return count_ == messages_.size(); }

 private:
  friend class UdpSocket;
  void PrepareForReceive();

  size_t slot_size_;
  std::vector<uint8_t> buffers_;
  std::vector<mmsghdr> messages_;
  std::vector<iovec> iovecs_;
  std::vector<sockaddr_in6> addresses_;
  size_t count_ = 0;
};

class UdpSocket {
 public:
  // Binds [::]:port. When `port` is taken and `fall_back_to_any` is set, binds a free port instead
  // (the caller reports the change); otherwise the error names the port. Port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<UdpSocket>> Open(uint16_t port, bool fall_back_to_any);
  ~UdpSocket();

  int fd() const { return fd_; }
  uint16_t port() const { return port_; }

  // Receives up to batch->capacity() datagrams without blocking; 0 when none are waiting.
  absl::StatusOr<size_t> RecvBatch(DatagramBatch* batch);
  // Sends the datagrams added to `batch`; returns how many the kernel took.
  size_t SendBatch(DatagramBatch* batch);
  // Sends one datagram; false when the kernel refused it.
  bool SendTo(absl::Span<const uint8_t> data, const Endpoint& to);

 private:
  UdpSocket(int fd, uint16_t port) : fd_(fd), port_(port) {}
  const int fd_;
  const uint16_t port_;
};

}  // namespace tunnelmesh
