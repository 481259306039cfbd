// Informer: lists a resource, then watches it, into a local cache (level-triggered, like
// client-go's reflector + store). Handlers see every object after each (re)list and every change
// in between, so a reconciler driven by them converges even when it misses an event.
//
// Semantics: list, then watch from the list's resourceVersion; keep the last resourceVersion seen
// (BOOKMARK events included) and watch again from it when a watch ends normally; relist when the
// server says 410 Gone (the version was compacted away), delivering on_delete for objects that
// vanished meanwhile and on_upsert for the rest; relist every Options::resync; on any other error
// back off exponentially with jitter (min_backoff..max_backoff), logging each distinct error
// once.
//
// Threads: the informer runs one thread of its own; the handlers run on it, one at a time, and
// must not call Stop(). Snapshot(), Find(), HasSynced() and counters() may be called from any
// thread. The informer thread owns last_error_ and is the only writer of the cache; mu_ guards the
// cache for readers and is never held during an API call or a handler; sleep_mu_ only wakes a
// backoff sleep when Stop() is called.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/kube/api.h"

namespace tunnelmesh::kube {

struct InformerCounters {
  std::atomic<uint64_t> lists{0};               // completed lists, the first included
  std::atomic<uint64_t> relists_after_gone{0};  // lists forced by 410 Gone
  std::atomic<uint64_t> watch_restarts{0};      // watches started again after a normal end
  std::atomic<uint64_t> errors{0};              // failed lists and watches (then back off)
  std::atomic<uint64_t> events{0};              // ADDED, MODIFIED, DELETED applied to the cache
};

class Informer {
 public:
  struct Handlers {
    std::function<void(const nlohmann::json&)> on_upsert;  // ADDED/MODIFIED, and each listed object
    std::function<void(const nlohmann::json&)>
        on_delete;                    // DELETED, and objects gone between lists
    std::function<void()> on_synced;  // after each completed list
  };
  struct Options {
    std::string ns;  // empty: all namespaces (or a cluster-scoped resource)
    std::string label_selector;
    absl::Duration min_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(10);
    int watch_timeout_seconds = 300;
    absl::Duration resync = absl::Minutes(5);  // relist period; zero = never
  };

  // `client` must outlive the informer.
  Informer(Api* client, Resource resource, Handlers handlers, Options options);
  ~Informer();  // Stop()
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Starts the thread; once.
  void Start();
  // Stops the thread and waits for it (at most about half a second plus a handler in progress).
  void Stop() ABSL_LOCKS_EXCLUDED(sleep_mu_, mu_);

  // True once the first list has been delivered.
  bool HasSynced() const;
  std::vector<nlohmann::json> Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<nlohmann::json> Find(const std::string& ns, const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  const InformerCounters& counters() const { return counters_; }
  // The last resourceVersion seen (for tests and diagnostics).
  std::string resource_version() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // The informer thread's loop and its steps (informer thread only).
  void Run() ABSL_LOCKS_EXCLUDED(sleep_mu_, mu_);
  // One list; replaces the cache and calls the handlers.
  [[nodiscard]] absl::Status ListOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // One watch from resource_version_; kOutOfRange means relist.
  [[nodiscard]] absl::Status WatchOnce(absl::Time relist_at) ABSL_LOCKS_EXCLUDED(mu_);
  void ApplyEvent(const WatchEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  // Sleeps up to `delay`; false when stopped meanwhile.
  bool Sleep(absl::Duration delay) ABSL_LOCKS_EXCLUDED(sleep_mu_);
  void NoteError(const absl::Status& status);

  Api* const client_;
  const Resource resource_;
  const Handlers handlers_;
  const Options options_;

  // Set under sleep_mu_ (so that a sleeping informer wakes), read without it by the watch.
  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::thread thread_;
  absl::Mutex sleep_mu_;

  mutable absl::Mutex mu_;
  std::map<std::string, nlohmann::json> cache_ ABSL_GUARDED_BY(mu_);  // key "namespace/name"
  std::string resource_version_ ABSL_GUARDED_BY(mu_);

  std::string last_error_;  // informer thread only
  InformerCounters counters_;
};

}  // namespace tunnelmesh::kube
