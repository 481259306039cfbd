// TunDevice: the layer-3 virtual interface the data plane exchanges plain IP packets with. The
// kernel hands the agent packets routed into the tunnel (Read) and takes decrypted packets from it
// (Write). LinuxTunDevice is the real one; testing/fake_tun_device.h holds a queue-backed fake.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tunnelmesh {

// One IP packet per Read and per Write, with no packet-information header in front.
// Thread safety: one thread may Read while another Writes; name() and fd() are immutable.
class TunDevice {
 public:
  virtual ~TunDevice() = default;

  // Reads one IPv4 or IPv6 packet into `buffer` and returns its length, or 0 when no packet is
  // waiting (the device never blocks: poll fd() for POLLIN). A packet longer than `buffer` is
  // truncated to buffer.size(), so size the buffer above the MTU: a read that fills the buffer
  // exactly may have been cut. Errors mean the device is unusable (e.g. it was deleted).
  [[nodiscard]] virtual absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer) = 0;

  // Hands one IP packet to the kernel. kUnavailable when the link is down or the queue is full:
  // drop the packet and count it. Messages of these per-packet errors are prebuilt (no allocation).
  [[nodiscard]] virtual absl::Status Write(absl::Span<const uint8_t> packet) = 0;

  // Hands one packet spread over several buffers to the kernel (writev). The default joins them and
  // calls Write.
  [[nodiscard]] virtual absl::Status WriteV(absl::Span<const iovec> parts);

  // True when every Read and Write carries a virtio_net_hdr in front of the packet and the kernel
  // exchanges TCP super-packets (see offload.h).
  virtual bool offload() const { return false; }

  // A pollable descriptor that is readable while Read would return a packet. Owned by the device.
  virtual int fd() const = 0;

  // The interface name as the kernel knows it (e.g. "tm0").
  virtual const std::string& name() const = 0;
};

}  // namespace tunnelmesh
