// TAI64N timestamps (12 bytes, big-endian seconds since 1970 offset by 2^62, then nanoseconds), as
// carried in WireGuard handshake initiations to reject replays (whitepaper section 5.1).
#pragma once

#include <array>
#include <cstdint>

#include "absl/time/time.h"

namespace tunnelmesh {

using Tai64n = std::array<uint8_t, 12>;

// Encodes `now`. Nanoseconds are rounded down to a multiple of 2^24 ns (about 16.8 ms), as the
// Linux implementation does, so a timestamp cannot serve as a precise clock oracle.
Tai64n EncodeTai64n(absl::Time now);

// Byte-wise big-endian comparison: true when `a` is strictly later than `b`.
bool Tai64nAfter(const Tai64n& a, const Tai64n& b);

}  // namespace tunnelmesh
