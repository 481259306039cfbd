// The UDP Bind: the data plane's dual-stack UDP socket (udp_socket.h) behind the Bind interface.
// Send turns a burst of datagrams into one sendmmsg with runs to one destination merged by UDP
// GSO; Receive takes one recvmmsg burst and splits GRO-coalesced buffers into their datagrams.
//
// Thread-safety: as Bind. Send keeps a SendBatch per sending thread (allocated once per thread),
// Receive uses one RecvBatch owned by the Bind (one receiving thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "node-agent/transport/bind.h"
#include "node-agent/transport/udp_socket.h"

namespace tunnelmesh {

class UdpBind final : public Bind {
 public:
  // Most datagrams one Send hands the kernel per sendmmsg; longer spans go in several calls.
  static constexpr size_t kMaxSendBurst = 256;
  // recvmmsg slots per Receive; each holds up to 64 KiB (a GRO-coalesced burst).
  static constexpr size_t kRecvSlots = 16;

  // Binds [::]:port, as UdpSocket::Open (port 0 picks one; a taken port falls back to a free one
  // only when `fall_back_to_any`).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UdpBind>> Open(uint16_t port,
                                                                     bool fall_back_to_any);
  explicit UdpBind(std::unique_ptr<UdpSocket> socket);

  Transport transport() const override { return Transport::kUdp; }
  uint16_t port() const override { return socket_->port(); }
  // Relay endpoints in `datagrams` are refused (counted in the return value).
  size_t Send(absl::Span<const OutgoingDatagram> datagrams) override;
  int readable_fd() const override { return socket_->fd(); }
  [[nodiscard]] absl::StatusOr<size_t> Receive(DatagramHandler handler) override;

  // Datagrams whose source address did not parse (never seen in practice; counted, not handed on).
  uint64_t bad_sources() const { return bad_sources_.load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<UdpSocket> socket_;
  RecvBatch recv_;
  std::atomic<uint64_t> bad_sources_{0};
};

}  // namespace tunnelmesh
