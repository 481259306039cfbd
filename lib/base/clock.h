// Time sources. Protocol cores never read a clock themselves: callers pass `MonoTime now` (for
// timers) and `absl::Time` (wall clock, only where a protocol needs one, such as TAI64N), so tests
// drive them with a fake clock.
#pragma once

#include <chrono>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tunnelmesh {

using MonoClock = std::chrono::steady_clock;
using MonoTime = MonoClock::time_point;
using Duration = std::chrono::nanoseconds;

// A source of both clocks. Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime Now() const = 0;
  virtual absl::Time WallNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  MonoTime Now() const override { return MonoClock::now(); }
  absl::Time WallNow() const override { return absl::Now(); }
};

}  // namespace tunnelmesh
