// A manually advanced clock for deterministic tests. Not thread-safe.
#pragma once

#include "lib/base/clock.h"

namespace tunnelmesh {

class FakeClock final : public Clock {
 public:
  FakeClock()
      : mono_(MonoTime(std::chrono::hours(1))), wall_(absl::FromUnixSeconds(1'700'000'000)) {}
  MonoTime Now() const override { return mono_; }
  absl::Time WallNow() const override { return wall_; }
  void Advance(Duration d) {
    mono_ += d;
    wall_ += absl::FromChrono(d);
  }

 private:
  MonoTime mono_;
  absl::Time wall_;
};

}  // namespace tunnelmesh
