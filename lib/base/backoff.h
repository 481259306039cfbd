// Exponential backoff with jitter, the one every retry loop uses (coordinator reconnects, relay
// reconnects, informer relists). The n-th delay is initial * 2^n, capped at `max`, scaled by a
// random factor in [1 - jitter, 1 + jitter] so that many clients losing the same server at once
// do not come back in lockstep (gRPC's connection-backoff idea). Seeded, so tests are repeatable.
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
  // `jitter` is the fraction each delay may deviate from the base, in [0, 1).
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed,
          double jitter = 0.25)
      : initial_(std::max(initial, std::chrono::milliseconds(1))),
        max_(std::max(max, initial_)),
        base_(initial_),
        jitter_(std::clamp(jitter, 0.0, 0.99)),
        rng_(seed) {}

  // The delay before the next attempt; each call doubles the base until it reaches `max`.
  std::chrono::milliseconds Next() {
    std::uniform_real_distribution<double> factor(1.0 - jitter_, 1.0 + jitter_);
    const double scaled = static_cast<double>(base_.count()) * factor(rng_);
    base_ = std::min(base_ * 2, max_);
    const auto delay = std::chrono::milliseconds(static_cast<int64_t>(scaled));
    return std::clamp(delay, std::chrono::milliseconds(1), longest());
  }

  // After a success: the next delay starts from `initial` again.
  void Reset() { base_ = initial_; }

  std::chrono::milliseconds max() const { return max_; }
  // The longest delay Next can return: `max` with the most jitter.
  std::chrono::milliseconds longest() const {
    return std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(max_.count()) * (1.0 + jitter_)));
  }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds base_;
  double jitter_;
  std::mt19937_64 rng_;
};

}  // namespace tunnelmesh
