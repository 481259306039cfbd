// File-descriptor limits. Both binaries raise the soft RLIMIT_NOFILE to the hard limit at start
// (Debian's default soft limit, 1024, is far below what a coordinator with thousands of members or
// an agent with many TCP fallbacks needs; the hard limit is what the administrator allows), and the
// operator's listener watchdog asks whether descriptors are available again after exhaustion.
// Knows nothing of sockets or gRPC. Thread-safe (the limits are per process).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace tunnelmesh {

struct DescriptorLimit {
  uint64_t soft_before = 0;  // The soft limit the process started with.
  uint64_t soft = 0;         // The soft limit now.
  uint64_t hard = 0;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (to fs.nr_open when the hard limit is
// unlimited). kUnavailable naming the limits when the kernel refuses.
[[nodiscard]] absl::StatusOr<DescriptorLimit> RaiseDescriptorLimit();

// The current soft RLIMIT_NOFILE.
[[nodiscard]] uint64_t DescriptorSoftLimit();

// How many descriptors the process has open (entries of /proc/self/fd, not counting the one used
// to list them). kUnavailable when they cannot be listed, e.g. because none is left to list them.
[[nodiscard]] absl::StatusOr<size_t> CountOpenDescriptors();

// True when at least `spare` descriptors are free below the soft limit; false when they are not,
// or when they cannot even be counted (exhausted).
[[nodiscard]] bool DescriptorsAvailable(size_t spare);

}  // namespace tunnelmesh
