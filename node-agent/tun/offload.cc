#include "node-agent/tun/offload.h"

#include <cstring>

namespace tunnelmesh {
namespace {

constexpr uint8_t kProtocolTcp = 6;
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpAck = 0x10, kTcpCwr = 0x80;
constexpr size_t kIpv6Header = 40;

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
void PutLe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Sum of the TCP pseudo-header (RFC 793 / RFC 8200 section 8.1) for `tcp_length` bytes.
uint32_t PseudoHeaderSum(const uint8_t* ip, bool v6, size_t tcp_length) {
  uint32_t sum = 0;
  if (v6) {
    sum = ChecksumAdd(absl::Span<const uint8_t>(ip + 8, 32), 0);
    sum += static_cast<uint32_t>(tcp_length >> 16) + static_cast<uint32_t>(tcp_length & 0xffff);
  } else {
    sum = ChecksumAdd(absl::Span<const uint8_t>(ip + 12, 8), 0);
    sum += static_cast<uint32_t>(tcp_length);
  }
  return sum + kProtocolTcp;
}

void SetIpv4HeaderChecksum(uint8_t* ip, size_t header_length) {
  PutBe16(ip + 10, 0);
  PutBe16(ip + 10, static_cast<uint16_t>(~ChecksumFold(
                       ChecksumAdd(absl::Span<const uint8_t>(ip, header_length), 0))));
}

// Where the TCP header starts and how long both headers are, for an IPv4 or IPv6 TCP packet
// without IPv6 extension headers; false for anything else.
bool TcpHeaders(absl::Span<const uint8_t> p, size_t* ip_header, size_t* tcp_header) {
  if (p.empty()) return false;
  const int version = p[0] >> 4;
  if (version == 4) {
    if (p.size() < 20 || p[9] != kProtocolTcp) return false;
    *ip_header = static_cast<size_t>(p[0] & 0x0f) * 4;
    if (*ip_header < 20) return false;
  } else if (version == 6) {
    if (p.size() < kIpv6Header || p[6] != kProtocolTcp) return false;
    *ip_header = kIpv6Header;
  } else {
    return false;
  }
  if (p.size() < *ip_header + 20) return false;
  *tcp_header = static_cast<size_t>(p[*ip_header + 12] >> 4) * 4;
  return *tcp_header >= 20 && p.size() >= *ip_header + *tcp_header;
}

}  // namespace

VirtioNetHdr VirtioNetHdr::Read(const uint8_t* in) {
  VirtioNetHdr h;
  h.flags = in[0];
  h.gso_type = in[1];
  h.hdr_len = Le16(in + 2);
  h.gso_size = Le16(in + 4);
  h.csum_start = Le16(in + 6);
  h.csum_offset = Le16(in + 8);
  return h;
}

void VirtioNetHdr::Write(uint8_t* out) const {
  out[0] = flags;
  out[1] = gso_type;
  PutLe16(out + 2, hdr_len);
  PutLe16(out + 4, gso_size);
  PutLe16(out + 6, csum_start);
  PutLe16(out + 8, csum_offset);
}

uint32_t ChecksumAdd(absl::Span<const uint8_t> data, uint32_t sum) {
  uint64_t acc = sum;
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, data.data() + i, 8);
    // Sum as big-endian 16-bit words: add the four halves of the byte-swapped value.
    word = __builtin_bswap64(word);
    acc += (word >> 48) + ((word >> 32) & 0xffff) + ((word >> 16) & 0xffff) + (word & 0xffff);
  }
  for (; i + 2 <= data.size(); i += 2) acc += Be16(data.data() + i);
  if (i < data.size()) acc += uint32_t{data[i]} << 8;
  while (acc >> 32) acc = (acc & 0xffffffff) + (acc >> 32);
  return static_cast<uint32_t>(acc);
}

uint16_t ChecksumFold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

bool CompleteChecksum(const VirtioNetHdr& hdr, absl::Span<uint8_t> packet) {
  if (!(hdr.flags & VirtioNetHdr::kNeedsCsum)) return true;
  const size_t start = hdr.csum_start;
  const size_t field = start + hdr.csum_offset;
  if (start >= packet.size() || field + 2 > packet.size()) return false;
  uint16_t value = static_cast<uint16_t>(~ChecksumFold(
      ChecksumAdd(absl::Span<const uint8_t>(packet.data() + start, packet.size() - start), 0)));
  if (value == 0 && hdr.csum_offset == 6) value = 0xffff;  // UDP: zero means "no checksum".
  PutBe16(packet.data() + field, value);
  return true;
}

size_t SplitSuperPacket(const VirtioNetHdr& hdr, absl::Span<const uint8_t> packet, size_t mtu,
                        absl::Span<uint8_t* const> outputs, absl::Span<size_t> lengths) {
  if (hdr.gso_type != VirtioNetHdr::kGsoTcpV4 && hdr.gso_type != VirtioNetHdr::kGsoTcpV6) return 0;
  size_t ip_header = 0, tcp_header = 0;
  if (!TcpHeaders(packet, &ip_header, &tcp_header)) return 0;
  const bool v6 = packet[0] >> 4 == 6;
  if (v6 != (hdr.gso_type == VirtioNetHdr::kGsoTcpV6)) return 0;
  const size_t headers = ip_header + tcp_header;
  const size_t mss = hdr.gso_size;
  if (mss == 0 || headers + mss > mtu || packet.size() <= headers) return 0;
  const size_t payload = packet.size() - headers;
  const size_t count = (payload + mss - 1) / mss;
  if (count > outputs.size() || count > lengths.size()) return 0;
  const uint32_t seq = Be32(packet.data() + ip_header + 4);
  const uint16_t id = v6 ? 0 : Be16(packet.data() + 4);
  const uint8_t flags = packet[ip_header + 13];
  for (size_t i = 0; i < count; ++i) {
    const size_t offset = i * mss;
    const size_t length = std::min(mss, payload - offset);
    uint8_t* out = outputs[i];
    std::memcpy(out, packet.data(), headers);
    std::memcpy(out + headers, packet.data() + headers + offset, length);
    if (v6) {
      PutBe16(out + 4, static_cast<uint16_t>(tcp_header + length));
    } else {
      PutBe16(out + 2, static_cast<uint16_t>(headers + length));
      PutBe16(out + 4, static_cast<uint16_t>(id + i));
      SetIpv4HeaderChecksum(out, ip_header);
    }
    uint8_t* tcp = out + ip_header;
    PutBe32(tcp + 4, seq + static_cast<uint32_t>(offset));
    uint8_t segment_flags = flags;
    if (i + 1 != count) segment_flags &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
    if (i != 0) segment_flags &= static_cast<uint8_t>(~kTcpCwr);
    tcp[13] = segment_flags;
    PutBe16(tcp + 16, 0);
    const uint32_t sum = ChecksumAdd(absl::Span<const uint8_t>(tcp, tcp_header + length),
                                     PseudoHeaderSum(out, v6, tcp_header + length));
    PutBe16(tcp + 16, static_cast<uint16_t>(~ChecksumFold(sum)));
    lengths[i] = headers + length;
  }
  return count;
}

bool GroCoalescer::TryStart(uint8_t* packet, size_t length) {
  absl::Span<const uint8_t> p(packet, length);
  size_t ip_header = 0, tcp_header = 0;
  if (!TcpHeaders(p, &ip_header, &tcp_header)) return false;
  if (packet[0] >> 4 == 4) {
    // No IP options, not a fragment, and the declared length is the packet.
    if (ip_header != 20 || (Be16(packet + 6) & 0x3fff) != 0 || Be16(packet + 2) != length) {
      return false;
    }
  } else if (Be16(packet + 4) + kIpv6Header != length) {
    return false;
  }
  const uint8_t flags = packet[ip_header + 13];
  if (flags != kTcpAck) return false;  // Only plain data segments are worth holding back.
  const size_t headers = ip_header + tcp_header;
  if (length <= headers) return false;
  run_.first = packet;
  run_.first_length = length;
  run_.ip_header = ip_header;
  run_.tcp_header = tcp_header;
  run_.segment = length - headers;
  run_.total = length;
  run_.next_seq = Be32(packet + ip_header + 4) + static_cast<uint32_t>(run_.segment);
  run_.closed = false;
  run_.push = false;
  run_.payloads.clear();
  return true;
}

bool GroCoalescer::TryAppend(uint8_t* packet, size_t length) {
  Run& r = run_;
  if (r.closed || r.payloads.size() + 1 >= kMaxSegments) return false;
  const uint8_t* first = r.first;
  const size_t headers = r.ip_header + r.tcp_header;
  if (length <= headers || (packet[0] >> 4) != (first[0] >> 4)) return false;
  const size_t payload = length - headers;
  if (payload > r.segment || r.total + payload > kMaxBytes) return false;
  if (first[0] >> 4 == 4) {
    // Same version/IHL, TOS, addresses, TTL, protocol and flags (DF); unfragmented; exact length.
    if (packet[0] != first[0] || packet[1] != first[1] || Be16(packet + 2) != length ||
        (Be16(packet + 6) & 0x3fff) != 0 || packet[6] != first[6] || packet[8] != first[8] ||
        packet[9] != first[9] || std::memcmp(packet + 12, first + 12, 8) != 0) {
      return false;
    }
  } else {
    // Same traffic class and flow label, next header, hop limit and addresses; exact length.
    if (std::memcmp(packet, first, 4) != 0 || Be16(packet + 4) + kIpv6Header != length ||
        packet[6] != first[6] || packet[7] != first[7] ||
        std::memcmp(packet + 8, first + 8, 32) != 0) {
      return false;
    }
  }
  const uint8_t* tcp = packet + r.ip_header;
  const uint8_t* first_tcp = first + r.ip_header;
  const uint8_t flags = tcp[13];
  // Same ports, acknowledgment, header length, window and options; in sequence; ACK or ACK+PSH.
  if (std::memcmp(tcp, first_tcp, 4) != 0 || Be32(tcp + 4) != r.next_seq ||
      std::memcmp(tcp + 8, first_tcp + 8, 4) != 0 || tcp[12] != first_tcp[12] ||
      std::memcmp(tcp + 14, first_tcp + 14, 2) != 0 ||
      std::memcmp(tcp + 20, first_tcp + 20, r.tcp_header - 20) != 0 ||
      (flags != kTcpAck && flags != (kTcpAck | kTcpPsh))) {
    return false;
  }
  r.payloads.push_back(iovec{packet + headers, payload});
  r.total += payload;
  r.next_seq += static_cast<uint32_t>(payload);
  if (payload < r.segment || (flags & kTcpPsh)) {
    r.closed = true;
    r.push = (flags & kTcpPsh) != 0;
  }
  return true;
}

void GroCoalescer::WriteRun(Write write) {
  Run& r = run_;
  uint8_t* first = r.first;
  VirtioNetHdr hdr;
  if (!r.payloads.empty()) {
    const bool v6 = first[0] >> 4 == 6;
    if (v6) {
      PutBe16(first + 4, static_cast<uint16_t>(r.total - kIpv6Header));
    } else {
      PutBe16(first + 2, static_cast<uint16_t>(r.total));
      SetIpv4HeaderChecksum(first, r.ip_header);
    }
    uint8_t* tcp = first + r.ip_header;
    if (r.push) tcp[13] |= kTcpPsh;
    // The kernel completes the checksum: the field holds the pseudo-header sum (CHECKSUM_PARTIAL).
    PutBe16(tcp + 16, ChecksumFold(PseudoHeaderSum(first, v6, r.total - r.ip_header)));
    hdr.flags = VirtioNetHdr::kNeedsCsum;
    hdr.gso_type = v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4;
    hdr.hdr_len = static_cast<uint16_t>(r.ip_header + r.tcp_header);
    hdr.gso_size = static_cast<uint16_t>(r.segment);
    hdr.csum_start = static_cast<uint16_t>(r.ip_header);
    hdr.csum_offset = 16;
  }
  hdr.Write(first - VirtioNetHdr::kSize);
  iov_.clear();
  iov_.push_back(iovec{first - VirtioNetHdr::kSize, r.first_length + VirtioNetHdr::kSize});
  iov_.insert(iov_.end(), r.payloads.begin(), r.payloads.end());
  write(iov_);
}

void GroCoalescer::Add(uint8_t* packet, size_t length, Write write) {
  if (open_ && TryAppend(packet, length)) {
    ++merged_;
    return;
  }
  if (open_) {
    WriteRun(write);
    open_ = false;
  }
  if (TryStart(packet, length)) {
    open_ = true;
    return;
  }
  VirtioNetHdr().Write(packet - VirtioNetHdr::kSize);
  iovec single{packet - VirtioNetHdr::kSize, length + VirtioNetHdr::kSize};
  write(absl::Span<const iovec>(&single, 1));
}

void GroCoalescer::Flush(Write write) {
  if (open_) WriteRun(write);
  open_ = false;
}

}  // namespace tunnelmesh
