// TCP segmentation and receive coalescing for a TUN device opened with IFF_VNET_HDR and TSO
// offloads (the scheme virtio-net uses). With offloads on, the kernel hands the agent TCP
// "super-packets" of up to 64 KiB with a virtio_net_hdr in front, and accepts the same from it:
// one read or write then moves what would otherwise take dozens, and the kernel's TCP stack runs
// once per super-packet. SplitSuperPacket cuts outbound super-packets into MTU-sized IP packets
// with complete checksums before encryption; GroCoalescer merges decrypted in-order segments of one
// TCP flow back into a super-packet for the write. Pure functions over buffers: no I/O.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace tunnelmesh {

// struct virtio_net_hdr (virtio spec 5.1.6), little-endian, as TUN reads and writes it.
struct VirtioNetHdr {
  static constexpr size_t kSize = 10;
  static constexpr uint8_t kNeedsCsum = 1;
  static constexpr uint8_t kGsoNone = 0, kGsoTcpV4 = 1, kGsoTcpV6 = 4;

  uint8_t flags = 0;
  uint8_t gso_type = kGsoNone;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;

  static VirtioNetHdr Read(const uint8_t* in);
  void Write(uint8_t* out) const;
};

// The 16-bit ones' complement sum (RFC 1071) of `data` added to `sum`, not yet folded or inverted.
uint32_t ChecksumAdd(absl::Span<const uint8_t> data, uint32_t sum);
// Folds a running sum to 16 bits.
uint16_t ChecksumFold(uint32_t sum);

// Completes the checksum of a single (non-GSO) packet in place when `hdr` says it needs one.
// Returns false when the checksum offsets lie outside the packet.
bool CompleteChecksum(const VirtioNetHdr& hdr, absl::Span<uint8_t> packet);

// Cuts the packet that followed `hdr` on a TUN read into IP packets of at most `mtu` bytes with
// complete TCP/UDP and IPv4 header checksums. Segment i is written to `outputs[i]` (each of at
// least `mtu` bytes) and its length to `lengths[i]`. Returns the number of segments (1 for a packet
// that needed no segmentation, whose checksum is completed when the header asks for it), or 0 when
// the packet or header is malformed or would need more than `outputs.size()` segments.
size_t SplitSuperPacket(const VirtioNetHdr& hdr, absl::Span<const uint8_t> packet, size_t mtu,
                        absl::Span<uint8_t* const> outputs, absl::Span<size_t> lengths);

// Merges consecutive in-order segments of one TCP flow into super-packets for a TUN write.
// Packets are handed over with VirtioNetHdr::kSize writable bytes in front of them (headroom for
// the header) and must stay untouched until Flush. Thread-compatible; one per receiving thread.
class GroCoalescer {
 public:
  // `write` receives one TUN write: the virtio header and packet, possibly spread over several
  // buffers (writev). It is called from Add and Flush.
  using Write = absl::FunctionRef<void(absl::Span<const iovec>)>;

  // Adds a complete IP packet at `packet` (`length` bytes).
  void Add(uint8_t* packet, size_t length, Write write);
  // Writes whatever is held back. Call at the end of each receive batch.
  void Flush(Write write);

  // How many packets were merged into a previous one, over the coalescer's life (for tests).
  uint64_t merged() const { return merged_; }

 private:
  static constexpr size_t kMaxSegments = 64;
  static constexpr size_t kMaxBytes = 65535;

  struct Run {
    uint8_t* first = nullptr;  // The first packet; its headers become the super-packet's.
    size_t first_length = 0;
    size_t ip_header = 0;
    size_t tcp_header = 0;
    size_t segment = 0;  // Payload size of every segment but possibly the last.
    size_t total = 0;    // Bytes of the super-packet (headers and all payloads).
    uint32_t next_seq = 0;
    bool closed = false;  // A short or PSH segment ended the run.
    bool push = false;
    std::vector<iovec> payloads;  // Payloads of the second and later segments.
  };

  // Whether `packet` continues the open run; appends it if so.
  bool TryAppend(uint8_t* packet, size_t length);
  // Starts a run with `packet` if it is a TCP segment that could be merged with later ones.
  bool TryStart(uint8_t* packet, size_t length);
  void WriteRun(Write write);

  bool open_ = false;
  Run run_;
  std::vector<iovec> iov_;
  uint64_t merged_ = 0;
};

}  // namespace tunnelmesh
