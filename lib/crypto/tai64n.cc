#include "lib/crypto/tai64n.h"

#include <cstring>

namespace tunnelmesh {

Tai64n EncodeTai64n(absl::Time now) {
  const int64_t unix_nanos = absl::ToUnixNanos(now);
  // TAI64 labels count from 2^62 and TAI ran 10 s ahead of UTC in 1970; other implementations
  // (Linux, wireguard-go) use the same label, so a key moved between them keeps its ordering.
  const uint64_t seconds =
      (uint64_t{1} << 62) + 10 + static_cast<uint64_t>(unix_nanos / 1'000'000'000);
  uint32_t nanos = static_cast<uint32_t>(unix_nanos % 1'000'000'000);
  nanos &= ~((uint32_t{1} << 24) - 1);
  Tai64n out;
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(seconds >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(nanos >> (24 - 8 * i));
  return out;
}

bool Tai64nAfter(const Tai64n& a, const Tai64n& b) {
  return std::memcmp(a.data(), b.data(), a.size()) > 0;
}

}  // namespace tunnelmesh
