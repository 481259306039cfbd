#include "lib/noise/replay_window.h"

namespace tunnelmesh::noise {

bool ReplayWindow::Accept(uint64_t counter, uint64_t limit) {
  if (counter >= limit) return false;
  constexpr uint64_t kWords = kBitsTotal / kWordBits;
  const uint64_t word = counter / kWordBits;
  if (!any_ || counter > greatest_) {
    // Clear the words that slide into the window, at most the whole ring.
    const uint64_t current_word = greatest_ / kWordBits;
    uint64_t advance = any_ ? word - current_word : kWords;
    if (advance > kWords) advance = kWords;
    for (uint64_t i = 1; i <= advance; ++i) bitmap_[(current_word + i) % kWords] = 0;
    greatest_ = counter;
    any_ = true;
  } else if (greatest_ - counter >= kWindowSize) {
    return false;
  }
  uint64_t& bits = bitmap_[word % kWords];
  const uint64_t mask = uint64_t{1} << (counter % kWordBits);
  if (bits & mask) return false;
  bits |= mask;
  return true;
}

}  // namespace tunnelmesh::noise
