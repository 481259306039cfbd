#include "operator/coordinator/address_allocator.h"

#include <cstring>

namespace tunnelmesh {

IpAddress NthAddress(const Prefix& cidr, uint64_t offset) {
  uint8_t bytes[16];
  std::memcpy(bytes, cidr.address().bytes(), cidr.address().byte_length());
  int i = cidr.address().byte_length() - 1;
  uint64_t carry = offset;
  while (carry > 0 && i >= 0) {
    uint64_t sum = bytes[i] + (carry & 0xff);
    bytes[i] = static_cast<uint8_t>(sum);
    carry = (carry >> 8) + (sum >> 8);
    --i;
  }
  return cidr.address().is_v4() ? IpAddress::V4(bytes) : IpAddress::V6(bytes);
}

absl::StatusOr<IpAddress> LowestFreeAddress(const Prefix& cidr, const std::set<IpAddress>& used) {
  const int host_bits = cidr.address().bit_length() - cidr.length();
  const uint64_t size = host_bits >= 20 ? (uint64_t{1} << 20) : (uint64_t{1} << host_bits);
  const uint64_t last = cidr.address().is_v4() ? size - 1 : size;
  for (uint64_t offset = 1; offset < last; ++offset) {
    IpAddress candidate = NthAddress(cidr, offset);
    if (!used.count(candidate)) return candidate;
  }
  return absl::ResourceExhaustedError("no free address left in " + cidr.ToString());
}

}  // namespace tunnelmesh
