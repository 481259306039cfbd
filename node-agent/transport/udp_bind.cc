#include "node-agent/transport/udp_bind.h"

#include <algorithm>

namespace tunnelmesh {

absl::StatusOr<std::unique_ptr<UdpBind>> UdpBind::Open(uint16_t port, bool fall_back_to_any) {
  absl::StatusOr<std::unique_ptr<UdpSocket>> socket = UdpSocket::Open(port, fall_back_to_any);
  if (!socket.ok()) return socket.status();
  return std::make_unique<UdpBind>(std::move(*socket));
}

UdpBind::UdpBind(std::unique_ptr<UdpSocket> socket)
    : socket_(std::move(socket)), recv_(kRecvSlots, 65536) {}

size_t UdpBind::Send(absl::Span<const OutgoingDatagram> datagrams) {
  if (datagrams.size() == 1) {  // Handshakes, keepalives, disco: no batch to build.
    const OutgoingDatagram& d = datagrams[0];
    if (!d.to.is_udp()) return 1;
    return socket_->SendTo(absl::Span<const uint8_t>(d.data, d.length), d.to.udp()) ? 0 : 1;
  }
  // One batch per sending thread, reused forever: no allocation per packet.
  thread_local SendBatch batch(kMaxSendBurst);
  size_t refused = 0;
  for (const OutgoingDatagram& d : datagrams) {
    if (!d.to.is_udp()) {
      ++refused;
      continue;
    }
    batch.Add(d.data, d.length, d.to.udp());
    if (batch.full()) {
      refused += socket_->Send(&batch);
      batch.Clear();
    }
  }
  if (batch.datagrams() > 0) {
    refused += socket_->Send(&batch);
    batch.Clear();
  }
  return refused;
}

absl::StatusOr<size_t> UdpBind::Receive(DatagramHandler handler) {
  absl::StatusOr<size_t> received = socket_->Receive(&recv_);
  if (!received.ok()) return received.status();
  size_t handed = 0;
  for (size_t i = 0; i < *received; ++i) {
    absl::StatusOr<Endpoint> source = recv_.source(i);
    if (!source.ok()) {
      bad_sources_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const TransportEndpoint from(*source);
    const size_t total = recv_.length(i);
    if (total == 0) {  // An empty datagram: the receiver counts it as malformed.
      handler(absl::Span<uint8_t>(recv_.data(i), 0), from);
      ++handed;
      continue;
    }
    // A GRO buffer holds datagrams of segment_size bytes, the last one possibly shorter.
    const size_t segment = recv_.segment_size(i) ? recv_.segment_size(i) : total;
    for (size_t offset = 0; offset < total; offset += segment) {
      handler(absl::Span<uint8_t>(recv_.data(i) + offset, std::min(segment, total - offset)), from);
      ++handed;
    }
  }
  return handed;
}

}  // namespace tunnelmesh
