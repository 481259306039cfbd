// Exponential backoff with jitter for reconnecting transports: the n-th delay is
// initial * 2^n (capped at `max`), scaled by a random factor in [0.75, 1.25] so that many agents
// losing the same relay at once do not reconnect in lockstep. Seeded, so tests are repeatable.
//
// Thread-safety: none; owned by one thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace tunnelmesh {

class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed)
      : initial_(std::max(initial, std::chrono::milliseconds(1))),
        max_(std::max(max, initial_)),
        base_(initial_),
        rng_(seed) {}

  // The delay before the next attempt; each call doubles the base until it reaches `max`.
  std::chrono::milliseconds Next() {
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    const double scaled = static_cast<double>(base_.count()) * jitter(rng_);
    base_ = std::min(base_ * 2, max_);
    const auto delay = std::chrono::milliseconds(static_cast<int64_t>(scaled));
    return std::clamp(delay, std::chrono::milliseconds(1), max_ + max_ / 4);
  }

  // After a success: the next delay starts from `initial` again.
  void Reset() { base_ = initial_; }

  std::chrono::milliseconds max() const { return max_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds base_;
  std::mt19937_64 rng_;
};

}  // namespace tunnelmesh
