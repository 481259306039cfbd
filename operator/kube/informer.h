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
// thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
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
  void Stop();

  // True once the first list has been delivered.
  bool HasSynced() const;
  std::vector<nlohmann::json> Snapshot() const;
  std::optional<nlohmann::json> Find(const std::string& ns, const std::string& name) const;
  const InformerCounters& counters() const { return counters_; }
  // The last resourceVersion seen (for tests and diagnostics).
  std::string resource_version() const;

 private:
  void Run();
  // One list; replaces the cache and calls the handlers.
  absl::Status ListOnce();
  // One watch from resource_version_; kOutOfRange means relist.
  absl::Status WatchOnce(absl::Time relist_at);
  void ApplyEvent(const WatchEvent& event);
  // Sleeps up to `delay`; false when stopped meanwhile.
  bool Sleep(absl::Duration delay);
  void NoteError(const absl::Status& status);

  Api* const client_;
  const Resource resource_;
  const Handlers handlers_;
  const Options options_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::thread thread_;
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;

  mutable std::mutex mu_;
  std::map<std::string, nlohmann::json> cache_;  // guarded by mu_; key "namespace/name"
  std::string resource_version_;                 // guarded by mu_

  std::string last_error_;  // informer thread only
  InformerCounters counters_;
};

}  // namespace tunnelmesh::kube
