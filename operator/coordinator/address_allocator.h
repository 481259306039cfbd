// Mesh address allocation, pure (no locks, no I/O): the lowest free host address of a range.
// IPv4 skips the network and broadcast addresses; IPv6 searches the first 2^20 addresses of the
// range (plenty for a mesh, and bounded work per allocation).
#pragma once

#include <cstdint>
#include <set>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

// The address at `offset` from the start of `cidr` (offset 0 is the range's first address).
IpAddress NthAddress(const Prefix& cidr, uint64_t offset);

// The lowest address of `cidr` (after the network address) not in `used`. RESOURCE_EXHAUSTED
// when none is left.
[[nodiscard]] absl::StatusOr<IpAddress> LowestFreeAddress(const Prefix& cidr,
                                                          const std::set<IpAddress>& used);

}  // namespace tunnelmesh
