// Fuzz target: decrypted packets from peers are untrusted input to the GRO coalescer, and the
// splitter must survive any header the kernel could hand it. Neither may read or write outside
// the buffers, and every write the coalescer makes must fit a TUN write (<= 64 KiB + header).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "node-agent/tun/offload.h"

using namespace tunnelmesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < VirtioNetHdr::kSize + 1) return 0;
  // Splitter: the first 10 bytes are the virtio header, the rest the packet.
  VirtioNetHdr hdr = VirtioNetHdr::Read(data);
  hdr.gso_type = data[1] % 2 ? VirtioNetHdr::kGsoTcpV4 : VirtioNetHdr::kGsoTcpV6;
  std::vector<std::vector<uint8_t>> out(64, std::vector<uint8_t>(1420));
  std::vector<uint8_t*> ptrs;
  for (auto& o : out) ptrs.push_back(o.data());
  size_t lengths[64];
  absl::Span<const uint8_t> packet(data + VirtioNetHdr::kSize, size - VirtioNetHdr::kSize);
  size_t n = SplitSuperPacket(hdr, packet, 1420, ptrs, absl::MakeSpan(lengths));
  for (size_t i = 0; i < n; ++i) {
    if (lengths[i] > 1420) std::abort();
  }
  std::vector<uint8_t> copy(packet.begin(), packet.end());
  CompleteChecksum(hdr, absl::MakeSpan(copy));

  // Coalescer: cut the input into packets at lengths taken from the input itself, each with
  // headroom, and feed them in order.
  std::vector<std::vector<uint8_t>> buffers;
  size_t pos = VirtioNetHdr::kSize;
  while (pos < size) {
    size_t len = 1 + (data[pos] * 7) % 200;
    if (pos + len > size) len = size - pos;
    std::vector<uint8_t> b(VirtioNetHdr::kSize + len);
    std::memcpy(b.data() + VirtioNetHdr::kSize, data + pos, len);
    buffers.push_back(std::move(b));
    pos += len;
  }
  // Also feed split segments, which are valid TCP and exercise the merge path.
  for (size_t i = 0; i < n; ++i) {
    std::vector<uint8_t> b(VirtioNetHdr::kSize + lengths[i]);
    std::memcpy(b.data() + VirtioNetHdr::kSize, out[i].data(), lengths[i]);
    buffers.push_back(std::move(b));
  }
  GroCoalescer gro;
  auto write = [](absl::Span<const iovec> parts) {
    size_t total = 0;
    for (const iovec& p : parts) total += p.iov_len;
    if (total > 65535 + VirtioNetHdr::kSize) std::abort();
  };
  for (auto& b : buffers)
    gro.Add(b.data() + VirtioNetHdr::kSize, b.size() - VirtioNetHdr::kSize, write);
  gro.Flush(write);
  return 0;
}
