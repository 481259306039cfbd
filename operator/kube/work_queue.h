// WorkQueue: the keys ("namespace/name", or "name" when cluster-scoped) that a reconciler must
// look at, as controller-runtime's rate-limited work queue keeps them. A key is held once however
// often it is added (events for one object collapse into one reconcile); a key being processed is
// not handed out again until Done(), and if it was added meanwhile it comes back after. Keys may
// be added after a delay (Result::requeue_after) or after a per-key exponential backoff with jitter
// (lib/base/backoff.h) when a reconcile failed; Forget() resets that backoff.
//
// Bounded: at most Options::max_keys distinct keys wait at once; more are dropped and counted
// (reconcilers are level-triggered and every informer resync adds every key again).
//
// Thread-safe: producers (informer handlers) and one or more workers call in concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/backoff.h"

namespace tunnelmesh::kube {

struct WorkQueueCounters {
  std::atomic<uint64_t> adds{0};     // Add calls, duplicates included
  std::atomic<uint64_t> dropped{0};  // keys refused because the queue was full
  std::atomic<uint64_t> retries{0};  // AddRateLimited calls
};

class WorkQueue {
 public:
  struct Options {
    size_t max_keys = 10000;
    std::chrono::milliseconds min_retry{50};
    std::chrono::milliseconds max_retry{30000};
    uint64_t seed = 1;  // for the retry jitter
  };
  WorkQueue() : WorkQueue(Options{}) {}
  explicit WorkQueue(Options options) : options_(options) {}
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void Add(const std::string& key);
  void AddAfter(const std::string& key, absl::Duration delay);
  // Adds after the key's next backoff delay.
  void AddRateLimited(const std::string& key);
  // The key reconciled fine: its backoff starts over.
  void Forget(const std::string& key);
  // The next key, waiting for one up to `timeout`; nullopt on timeout or after ShutDown().
  std::optional<std::string> Get(absl::Duration timeout);
  // Processing of `key` (from Get) is over.
  void Done(const std::string& key);
  // Wakes every Get; no key is handed out afterwards.
  void ShutDown();

  // Keys waiting now (delayed ones not counted).
  size_t size() const;
  const WorkQueueCounters& counters() const { return counters_; }

 private:
  // Moves delayed keys whose time came into the queue.
  void PromoteLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A key is ready or the queue is shut down (the wake-up condition of Get).
  bool HasWorkLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const Options options_;
  WorkQueueCounters counters_;
  mutable absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> queued_ ABSL_GUARDED_BY(mu_);      // keys in queue_
  std::set<std::string> processing_ ABSL_GUARDED_BY(mu_);  // handed out, not Done
  std::set<std::string> dirty_ ABSL_GUARDED_BY(mu_);       // added while processing
  std::multimap<absl::Time, std::string> delayed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Backoff>> backoff_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tunnelmesh::kube
