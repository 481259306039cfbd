// The data plane's UDP socket: one dual-stack (IPv6 with IPv4-mapped addresses) socket, bound to
// the listen port, with batched receive and send. Sends use sendmmsg, and UDP GSO (UDP_SEGMENT) to
// hand the kernel runs of equal-sized datagrams to one destination as a single buffer; receives use
// recvmmsg with UDP GRO, so a burst from one sender arrives as one coalesced buffer that the caller
// splits at the segment size. Both cut the per-packet cost of the kernel's UDP path. Thread-safe
// for one receiving thread plus any number of sending threads.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

// Slots for one recvmmsg call. Allocated once; reused forever.
class RecvBatch {
 public:
  RecvBatch(size_t slots, size_t slot_size);

  // After UdpSocket::Receive: buffers [0, count()) hold length(i) bytes from source(i). When
  // segment_size(i) is not zero the buffer holds several datagrams of that size (the last may be
  // shorter), coalesced by GRO.
  size_t count() const { return count_; }
  uint8_t* data(size_t i) { return buffers_.data() + i * slot_size_; }
  size_t length(size_t i) const { return messages_[i].msg_len; }
  size_t segment_size(size_t i) const { return segment_sizes_[i]; }
  absl::StatusOr<Endpoint> source(size_t i) const {
    return Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&addresses_[i]),
                                  messages_[i].msg_hdr.msg_namelen);
  }

 private:
  friend class UdpSocket;
  static constexpr size_t kControlSize = 64;

  size_t slot_size_;
  std::vector<uint8_t> buffers_;
  std::vector<mmsghdr> messages_;
  std::vector<iovec> iovecs_;
  std::vector<sockaddr_in6> addresses_;
  std::vector<uint8_t> control_;
  std::vector<size_t> segment_sizes_;
  size_t count_ = 0;
};

// Datagrams queued for one sendmmsg call. Consecutive datagrams to the same destination merge into
// one GSO message while all but the last have the same size. Does not copy the data: the caller
// keeps the buffers alive until Send returns.
class SendBatch {
 public:
  explicit SendBatch(size_t max_datagrams);

  void Add(const uint8_t* data, size_t length, const Endpoint& to);
  size_t datagrams() const { return iov_count_; }
  bool full() const { return iov_count_ == iovecs_.size(); }
  void Clear();

 private:
  friend class UdpSocket;
  friend void SplitIntoSingles(SendBatch* batch, size_t from);
  struct Message {
    Endpoint to;
    size_t first_iov = 0;
    size_t iov_count = 0;
    size_t segment_size = 0;
    size_t total = 0;
    bool closed = false;  // Holds a short last segment: nothing more may join.
  };
  static constexpr size_t kControlSize = 32;

  bool coalesce_ = true;
  std::vector<iovec> iovecs_;
  std::vector<Message> pending_;
  std::vector<mmsghdr> messages_;
  std::vector<sockaddr_in6> addresses_;
  std::vector<uint8_t> control_;
  size_t iov_count_ = 0;
  size_t message_count_ = 0;
};

class UdpSocket {
 public:
  // Binds [::]:port. When `port` is taken and `fall_back_to_any` is set, binds a free port instead
  // (the caller reports the change); otherwise the error names the port. Port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<UdpSocket>> Open(uint16_t port, bool fall_back_to_any);
  ~UdpSocket();

  int fd() const { return fd_; }
  uint16_t port() const { return port_; }

  // Receives up to the batch's capacity without blocking; 0 when nothing is waiting.
  absl::StatusOr<size_t> Receive(RecvBatch* batch);
  // Sends everything in `batch`; returns how many datagrams the kernel refused.
  size_t Send(SendBatch* batch);
  // Sends one datagram; false when the kernel refused it.
  bool SendTo(absl::Span<const uint8_t> data, const Endpoint& to);

 private:
  UdpSocket(int fd, uint16_t port) : fd_(fd), port_(port) {}
  size_t SendMessages(SendBatch* batch, size_t from);

  const int fd_;
  const uint16_t port_;
  // Cleared for good when the kernel refuses GSO (an old kernel or a device without checksum
  // offload); datagrams then go one per message.
  std::atomic<bool> gso_{true};
};

}  // namespace tunnelmesh
