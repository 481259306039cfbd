// A watching member's queue of map updates: bounded, and collapsing a backlog into one full map.
//
// The coordinator pushes deltas (under its own lock) as the mesh changes; the member's Watch
// stream takes them out as fast as its connection drains. A member that falls more than
// `max_pending` deltas behind has its deltas dropped and is marked to receive one fresh full map
// instead: memory per watcher is bounded by `max_pending` updates, and a slow reader costs the
// coordinator one full map when it catches up, not an ever-growing queue. Call-me-maybe signals in
// a dropped backlog are lost with it; they are hints that the sender repeats.
//
// Thread-safety: all methods are thread-safe. Lock order: the coordinator's lock, then this
// queue's lock. TryNext and Next may call the refill function, which takes the coordinator's lock:
// never call them with that lock held. Push and Cancel never call out; the coordinator calls
// Wake() for the subscriptions they returned true for, after releasing its lock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/metrics/exposition.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

class Subscription {
 public:
  struct Options {
    // Deltas held for a reader before its backlog collapses into one full map.
    size_t max_pending = 256;
    // Replaces the queue by a fresh full map (through ResetWithFullMap), atomically with respect
    // to Push. Called by TryNext/Next without this queue's lock, never under the coordinator's.
    std::function<void(Subscription*)> refill;
    // Counts collapses (may be null).
    std::atomic<uint64_t>* collapses = nullptr;
    // Observes, for each pushed update the reader takes (deltas, and the full map a watch starts
    // with), the seconds since it was pushed: how long a change took to reach this member's
    // stream. Full maps that refill a collapsed backlog are not observed. May be null.
    metrics::Histogram* fanout_seconds = nullptr;
  };

  enum class Poll { kUpdate, kEmpty, kEnded };

  explicit Subscription(Options options);

  // Queues `update`. True when the reader should be woken (the queue went from empty to non-empty,
  // or the backlog collapsed). Called under the coordinator's lock; never blocks.
  [[nodiscard]] bool Push(coord::MapUpdate update) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the queue and marks the subscription for a fresh full map, built when the reader next
  // takes an update (a Mesh's settings changed: every peer may look different). True when the
  // reader should be woken.
  [[nodiscard]] bool RequestFullMap() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the stream; `reason` (OK for a plain end) is what the member is told. True when the
  // reader should be woken.
  bool Cancel(absl::Status reason = absl::OkStatus()) ABSL_LOCKS_EXCLUDED(mu_);
  // Calls the reader's wake hook, if any. Call without the coordinator's lock.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  // The reader's hook, called by Wake from whatever thread changed the queue. It must not block.
  // Null detaches the reader.
  void SetWakeHook(std::function<void()> hook) ABSL_LOCKS_EXCLUDED(mu_);

  // Takes the next update without waiting. A collapsed backlog is refilled first.
  Poll TryNext(coord::MapUpdate* out) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for the next update. False on timeout or once cancelled (check
  // cancelled()). For tests and simple readers.
  bool Next(coord::MapUpdate* out, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // For the refill function (under the coordinator's lock): drops the queue and the collapse mark
  // and queues `full`.
  void ResetWithFullMap(coord::MapUpdate full) ABSL_LOCKS_EXCLUDED(mu_);

  bool cancelled() const ABSL_LOCKS_EXCLUDED(mu_);
  // Whether TryNext has something to do: an update, a refill or the end.
  bool HasWork() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status reason() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t pending() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t collapses() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // kUpdate, kEmpty or kEnded from the queue as it is; sets *refill when a refill is due.
  Poll TakeLocked(coord::MapUpdate* out, bool* refill) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<coord::MapUpdate> queue_ ABSL_GUARDED_BY(mu_);
  // When each entry of queue_ was pushed; nullopt for refills. Same length as queue_.
  std::deque<std::optional<std::chrono::steady_clock::time_point>> pushed_at_ ABSL_GUARDED_BY(mu_);
  bool needs_full_map_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status reason_ ABSL_GUARDED_BY(mu_);
  uint64_t collapses_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const std::function<void()>> wake_hook_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
