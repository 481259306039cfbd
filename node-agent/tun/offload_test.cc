#include "node-agent/tun/offload.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using Bytes = std::vector<uint8_t>;

// Reference RFC 1071 sum, 16 bits at a time.
uint16_t NaiveSum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n % 2) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

bool TcpChecksumValid(const Bytes& pkt) {
  bool v6 = pkt[0] >> 4 == 6;
  size_t ihl = v6 ? 40 : (pkt[0] & 15) * 4;
  size_t tcp_len = pkt.size() - ihl;
  uint32_t sum = 0;
  if (v6) {
    sum = NaiveSum(pkt.data() + 8, 32);
    sum += tcp_len + 6;
  } else {
    sum = NaiveSum(pkt.data() + 12, 8);
    sum += tcp_len + 6;
    if (NaiveSum(pkt.data(), ihl) != 0xffff) return false;
  }
  return NaiveSum(pkt.data() + ihl, tcp_len, sum) == 0xffff;
}

// A TCP packet with `payload` bytes, timestamps option, ACK flag and given seq.
Bytes TcpPacket(bool v6, size_t payload, uint32_t seq, uint8_t flags = 0x10, uint8_t fill = 0) {
  size_t ihl = v6 ? 40 : 20, thl = 32;
  Bytes p(ihl + thl + payload);
  if (v6) {
    p[0] = 0x60;
    p[4] = (thl + payload) >> 8;
    p[5] = (thl + payload) & 0xff;
    p[6] = 6;
    p[7] = 64;
    p[23] = 1;
    p[39] = 2;
  } else {
    p[0] = 0x45;
    p[2] = (ihl + thl + payload) >> 8;
    p[3] = (ihl + thl + payload) & 0xff;
    p[4] = 0x12;
    p[6] = 0x40;  // DF
    p[8] = 64;
    p[9] = 6;
    p[12] = 10, p[15] = 1, p[16] = 10, p[19] = 2;
  }
  uint8_t* t = p.data() + ihl;
  t[0] = 0x30, t[1] = 0x39, t[2] = 0x14, t[3] = 0x51;
  t[4] = seq >> 24, t[5] = seq >> 16, t[6] = seq >> 8, t[7] = seq;
  t[11] = 7;
  t[12] = (thl / 4) << 4;
  t[13] = flags;
  t[14] = 0x01;
  t[20] = 1, t[21] = 1, t[22] = 8, t[23] = 10;  // NOP NOP TS
  for (size_t i = 0; i < payload; ++i) p[ihl + thl + i] = static_cast<uint8_t>(fill + i * 7);
  return p;
}

class SplitTest : public ::testing::TestWithParam<bool> {};

TEST_P(SplitTest, SegmentsCarryTheStreamWithValidChecksums) {
  const bool v6 = GetParam();
  const size_t mtu = 1420, ihl = v6 ? 40 : 20, mss = mtu - ihl - 32;
  Bytes super = TcpPacket(v6, 5000, 1000, 0x18 /* ACK|PSH */);
  VirtioNetHdr hdr;
  hdr.flags = VirtioNetHdr::kNeedsCsum;
  hdr.gso_type = v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4;
  hdr.gso_size = static_cast<uint16_t>(mss);
  hdr.hdr_len = static_cast<uint16_t>(ihl + 32);
  hdr.csum_start = static_cast<uint16_t>(ihl);
  hdr.csum_offset = 16;
  std::vector<Bytes> out(8, Bytes(mtu));
  std::vector<uint8_t*> ptrs;
  for (auto& o : out) ptrs.push_back(o.data());
  std::vector<size_t> lengths(8);
  size_t n = SplitSuperPacket(hdr, super, mtu, ptrs, absl::MakeSpan(lengths));
  ASSERT_EQ(n, (5000 + mss - 1) / mss);
  Bytes stream;
  for (size_t i = 0; i < n; ++i) {
    Bytes seg(out[i].begin(), out[i].begin() + lengths[i]);
    EXPECT_LE(seg.size(), mtu);
    EXPECT_TRUE(TcpChecksumValid(seg)) << "segment " << i;
    uint32_t seq = (seg[ihl + 4] << 24) | (seg[ihl + 5] << 16) | (seg[ihl + 6] << 8) | seg[ihl + 7];
    EXPECT_EQ(seq, 1000 + i * mss);
    EXPECT_EQ(seg[ihl + 13], i + 1 == n ? 0x18 : 0x10) << "PSH only on the last segment";
    stream.insert(stream.end(), seg.begin() + ihl + 32, seg.end());
  }
  EXPECT_TRUE(std::equal(stream.begin(), stream.end(), super.begin() + ihl + 32));

  // Merging the segments again gives one write that splits back into the same segments.
  GroCoalescer gro;
  std::vector<Bytes> buffers;
  for (size_t i = 0; i < n; ++i) {
    Bytes b(VirtioNetHdr::kSize + lengths[i]);
    std::copy(out[i].begin(), out[i].begin() + lengths[i], b.begin() + VirtioNetHdr::kSize);
    buffers.push_back(std::move(b));
  }
  std::vector<Bytes> writes;
  auto write = [&](absl::Span<const iovec> iov) {
    Bytes w;
    for (const iovec& v : iov)
      w.insert(w.end(), (uint8_t*)v.iov_base, (uint8_t*)v.iov_base + v.iov_len);
    writes.push_back(std::move(w));
  };
  for (auto& b : buffers)
    gro.Add(b.data() + VirtioNetHdr::kSize, b.size() - VirtioNetHdr::kSize, write);
  gro.Flush(write);
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(gro.merged(), n - 1);
  VirtioNetHdr merged = VirtioNetHdr::Read(writes[0].data());
  EXPECT_EQ(merged.gso_type, hdr.gso_type);
  EXPECT_EQ(merged.gso_size, mss);
  Bytes merged_packet(writes[0].begin() + VirtioNetHdr::kSize, writes[0].end());
  EXPECT_EQ(merged_packet.size(), super.size());
  std::vector<Bytes> again(8, Bytes(mtu));
  std::vector<uint8_t*> again_ptrs;
  for (auto& o : again) again_ptrs.push_back(o.data());
  std::vector<size_t> again_lengths(8);
  ASSERT_EQ(SplitSuperPacket(merged, merged_packet, mtu, again_ptrs, absl::MakeSpan(again_lengths)),
            n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(Bytes(again[i].begin(), again[i].begin() + again_lengths[i]),
              Bytes(out[i].begin(), out[i].begin() + lengths[i]))
        << "segment " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, SplitTest, ::testing::Values(false, true));

TEST(SplitTest, RejectsMalformedHeaders) {
  Bytes p = TcpPacket(false, 3000, 1);
  VirtioNetHdr hdr;
  hdr.gso_type = VirtioNetHdr::kGsoTcpV4;
  hdr.gso_size = 0;
  std::vector<Bytes> out(4, Bytes(1420));
  std::vector<uint8_t*> ptrs;
  for (auto& o : out) ptrs.push_back(o.data());
  std::vector<size_t> lengths(4);
  EXPECT_EQ(SplitSuperPacket(hdr, p, 1420, ptrs, absl::MakeSpan(lengths)), 0u) << "zero MSS";
  hdr.gso_size = 100;
  EXPECT_EQ(SplitSuperPacket(hdr, p, 1420, ptrs, absl::MakeSpan(lengths)), 0u)
      << "too many segments";
  hdr.gso_size = 1368;
  hdr.gso_type = VirtioNetHdr::kGsoTcpV6;
  EXPECT_EQ(SplitSuperPacket(hdr, p, 1420, ptrs, absl::MakeSpan(lengths)), 0u) << "family mismatch";
  hdr.gso_type = VirtioNetHdr::kGsoTcpV4;
  EXPECT_EQ(SplitSuperPacket(hdr, absl::Span<const uint8_t>(p.data(), 30), 1420, ptrs,
                             absl::MakeSpan(lengths)),
            0u)
      << "truncated";
}

TEST(GroTest, KeepsOrderAndDoesNotMergeAcrossFlowsGapsOrFlags) {
  GroCoalescer gro;
  std::vector<Bytes> packets = {
      TcpPacket(false, 1000, 0),           // run starts
      TcpPacket(false, 1000, 1000),        // merges
      TcpPacket(false, 1000, 5000),        // gap: new run
      TcpPacket(false, 1000, 6000, 0x11),  // FIN: written alone, ends run
      TcpPacket(true, 1000, 0),            // other family
  };
  std::vector<Bytes> buffers;
  for (auto& p : packets) {
    Bytes b(VirtioNetHdr::kSize);
    b.insert(b.end(), p.begin(), p.end());
    buffers.push_back(std::move(b));
  }
  std::vector<size_t> write_sizes;
  auto write = [&](absl::Span<const iovec> iov) {
    size_t n = 0;
    for (const iovec& v : iov) n += v.iov_len;
    write_sizes.push_back(n - VirtioNetHdr::kSize);
  };
  for (auto& b : buffers)
    gro.Add(b.data() + VirtioNetHdr::kSize, b.size() - VirtioNetHdr::kSize, write);
  gro.Flush(write);
  const size_t one = packets[0].size();
  EXPECT_EQ(write_sizes, (std::vector<size_t>{one + 1000, one, one, packets[4].size()}));
}

TEST(ChecksumTest, MatchesReferenceOnRandomData) {
  std::mt19937 rng(3);
  for (int i = 0; i < 500; ++i) {
    Bytes d(rng() % 3000);
    for (auto& b : d) b = rng();
    EXPECT_EQ(ChecksumFold(ChecksumAdd(d, 0)), NaiveSum(d.data(), d.size())) << d.size();
  }
}

TEST(ChecksumTest, CompletesPartialChecksum) {
  Bytes p = TcpPacket(false, 100, 5);
  uint16_t ip_sum = static_cast<uint16_t>(~NaiveSum(p.data(), 20));
  p[10] = ip_sum >> 8;
  p[11] = ip_sum & 0xff;
  // Put the pseudo-header sum in the field, as the kernel does for CHECKSUM_PARTIAL.
  uint32_t pseudo = NaiveSum(p.data() + 12, 8) + (p.size() - 20) + 6;
  uint16_t folded = NaiveSum(nullptr, 0, pseudo);
  p[36] = folded >> 8;
  p[37] = folded & 0xff;
  VirtioNetHdr hdr;
  hdr.flags = VirtioNetHdr::kNeedsCsum;
  hdr.csum_start = 20;
  hdr.csum_offset = 16;
  ASSERT_TRUE(CompleteChecksum(hdr, absl::MakeSpan(p)));
  EXPECT_TRUE(TcpChecksumValid(p));
  hdr.csum_start = 200;
  EXPECT_FALSE(CompleteChecksum(hdr, absl::MakeSpan(p)));
}

}  // namespace
}  // namespace tunnelmesh
