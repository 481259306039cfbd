// An immutable value that one thread replaces and others read, as the data plane reads the route
// table the control thread publishes: readers take a shared_ptr to the current value and keep
// using it while a newer one is published; the old value goes when its last reader drops it.
//
// A small mutex instead of std::atomic<std::shared_ptr>: libstdc++ 12 implements that with a lock
// bit ThreadSanitizer cannot see (the TSAN leg reported races in it), and readers load once per
// burst of packets, not per packet, so the lock costs nothing measurable.
//
// Thread-safety: Load and Store from any thread.
#pragma once

#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace tunnelmesh {

template <typename T>
class Snapshot {
 public:
  explicit Snapshot(std::shared_ptr<const T> initial) : value_(std::move(initial)) {}

  std::shared_ptr<const T> Load() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return value_;
  }

  void Store(std::shared_ptr<const T> value) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      value.swap(value_);
    }
    // The previous value is released here, outside the lock.
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const T> value_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
