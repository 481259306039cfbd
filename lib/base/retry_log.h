// RetryLog: decides which failures of a retry loop are worth a log line, so that a loop that
// retries fast (to be back within a second of a server's return) does not flood the log while the
// server stays away. The first failure is logged; after that only a summary ("still failing after
// N attempts over T"), at exponentially growing, jittered spacing capped near 30 s; and one line
// when the loop recovers. Sans-IO: the caller passes the time, the class says what to log.
//
// Thread-safety: none; owned by the retry loop's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "lib/base/backoff.h"

namespace tunnelmesh {

class RetryLog {
 public:
  // What to do with one failure.
  enum class Say {
    kNothing,  // stay quiet (count it)
    kFirst,    // the first failure after a success: log it with its cause
    kSummary,  // log "still failing after attempts() attempts over elapsed()"
  };
  // The outage a success ended.
  struct Outage {
    int attempts = 0;  // failed attempts
    absl::Duration elapsed;
  };

  // Summaries come `first_summary` after the first failure, then at doubling spacing up to
  // `max_spacing`, each jittered by +-20 % (seeded, so tests repeat).
  explicit RetryLog(uint64_t seed,
                    std::chrono::milliseconds first_summary = std::chrono::milliseconds(2000),
                    std::chrono::milliseconds max_spacing = std::chrono::milliseconds(25000))
      : spacing_(first_summary, max_spacing, seed, 0.2) {}

  Say OnFailure(absl::Time now) {
    ++attempts_;
    if (!first_failure_) {
      first_failure_ = now;
      spacing_.Reset();
      next_summary_ = now + absl::FromChrono(spacing_.Next());
      return Say::kFirst;
    }
    if (now < next_summary_) return Say::kNothing;
    next_summary_ = now + absl::FromChrono(spacing_.Next());
    return Say::kSummary;
  }

  // After a success: the outage it ended, or nullopt when there was none.
  std::optional<Outage> OnSuccess(absl::Time now) {
    if (!first_failure_) return std::nullopt;
    Outage outage{attempts_, now - *first_failure_};
    first_failure_.reset();
    attempts_ = 0;
    return outage;
  }

  bool failing() const { return first_failure_.has_value(); }
  // Failed attempts since the last success.
  int attempts() const { return attempts_; }
  absl::Duration elapsed(absl::Time now) const {
    return first_failure_ ? now - *first_failure_ : absl::ZeroDuration();
  }

 private:
  Backoff spacing_;
  std::optional<absl::Time> first_failure_;
  absl::Time next_summary_;
  int attempts_ = 0;
};

// "45 s", "2 min 5 s", "1 h 3 min": an outage's length for a log line (whole seconds).
std::string FormatOutageDuration(absl::Duration d);

}  // namespace tunnelmesh
