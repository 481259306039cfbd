// The sliding window that rejects replayed or too-old transport counters (whitepaper section 5.4.6,
// the algorithm of RFC 6479): a ring of 8192 bits, of which the newest 8128 counters are tracked,
// as in current Linux and wireguard-go. Thread-compatible; the owning Keypair guards it with a
// lock.
#pragma once

#include <array>
#include <cstdint>

namespace tunnelmesh::noise {

class ReplayWindow {
 public:
  static constexpr uint64_t kBitsTotal = 8192;
  static constexpr uint64_t kWordBits = 64;
  static constexpr uint64_t kWindowSize = kBitsTotal - kWordBits;

  // Records `counter` and returns true when it is new and inside the window (or ahead of it);
  // returns false for a replay, a counter too far behind, or one at or past `limit`.
  bool Accept(uint64_t counter, uint64_t limit);

  uint64_t greatest() const { return greatest_; }

 private:
  std::array<uint64_t, kBitsTotal / kWordBits> bitmap_{};
  uint64_t greatest_ = 0;
  bool any_ = false;
};

}  // namespace tunnelmesh::noise
