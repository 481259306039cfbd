// Writes member records to the MemberStore off the coordinator's lock: write-behind on one
// store-writer thread, so that a slow store (MeshPeers on a slow API server: up to five requests
// with 30 s timeouts each) never stalls Authenticate, IsMember, ReportEndpoints, CallMeMaybe or a
// Watch start, which only read the coordinator's in-memory map.
//
// The coordinator decides under its lock (allocates, names, updates its in-memory member map,
// which stays authoritative) and then queues the record here. Per-key coalescing: a key holds at
// most one pending operation and a newer one replaces it (the latest record wins), so a backlog is
// bounded by the member count however slow the store is. Operations on one key run in the order
// they were queued; the MemberStore is only ever called from the writer thread (it needs no lock
// of its own).
//
// The quarantine (MemberStore::SaveQuarantine) is written by the same thread: one pending
// snapshot, a newer one replacing it, written before any member operation queued after it, so
// that a departed member's quarantine is durable before its record is deleted (a crash between
// the two never frees its addresses). While a quarantine write is being retried, member writes
// wait behind it (with the same backoff): a store failing one write is likely failing all.
//
// Failures: an error the store may recover from (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL,
// UNKNOWN, ABORTED, RESOURCE_EXHAUSTED) is retried with the shared jittered backoff until it
// succeeds or a newer operation for the key replaces it; any other error (a MeshPeer name that
// belongs to another key, a rejected object) is not retried. Both are counted and logged, and
// WaitDurable reports them to the caller waiting for that key.
//
// Thread-safety: every public method is thread-safe and none blocks on the store except
// WaitDurable and Flush, which wait with a deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/backoff.h"
#include "operator/coordinator/state_store.h"

namespace tunnelmesh {

struct MemberWriterCounters {
  std::atomic<uint64_t> writes{0};     // Store calls that succeeded.
  std::atomic<uint64_t> coalesced{0};  // Operations replaced by a newer one before they ran.
  std::atomic<uint64_t> retries{0};    // Failed writes queued again.
  std::atomic<uint64_t> failures{0};   // Failed store calls (retried or not).
};

class MemberWriter {
 public:
  struct Options {
    std::chrono::milliseconds initial_backoff{100};
    std::chrono::milliseconds max_backoff{10'000};
    uint64_t seed = 1;
    // How long the destructor lets queued writes finish before it abandons them.
    absl::Duration flush_on_stop = absl::Seconds(5);
  };

  // `store` and `counters` must outlive the writer. Starts the writer thread.
  MemberWriter(MemberStore* store, MemberWriterCounters* counters, Options options);
  MemberWriter(MemberStore* store, MemberWriterCounters* counters)
      : MemberWriter(store, counters, Options()) {}
  // Lets queued operations finish for up to `flush_on_stop`, then stops the thread.
  ~MemberWriter();
  MemberWriter(const MemberWriter&) = delete;
  MemberWriter& operator=(const MemberWriter&) = delete;

  // Queue a durable write of `record`, a durable delete of `key`, or an update of the store's
  // memory only (MemberStore::Observe; `record` null removes). Never block.
  // Put may create the member's record (a first registration); Update only changes a record that
  // exists (MemberStore::Update: a member the coordinator knows, whose record someone else may
  // delete before the write runs). When a Put and an Update coalesce, the write may create if
  // either could (an Update queued behind a Put that has not run yet needs the create).
  void Put(const MemberRecord& record) ABSL_LOCKS_EXCLUDED(mu_);
  void Update(const MemberRecord& record) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(const PublicKey& key) ABSL_LOCKS_EXCLUDED(mu_);
  void Observe(const PublicKey& key, const MemberRecord* record) ABSL_LOCKS_EXCLUDED(mu_);
  // Queue a durable write of the whole quarantine (the latest snapshot wins). Never blocks.
  void SaveQuarantine(std::vector<QuarantineEntry> entries) ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until nothing is queued or in flight for `key`. OK when its last operation succeeded
  // (or there was none); its error when that failed for good; UNAVAILABLE naming the last error
  // when the deadline passed while it was still being written or retried.
  [[nodiscard]] absl::Status WaitDurable(const PublicKey& key, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until the queue is empty and nothing is in flight. False on timeout.
  bool Flush(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Operations queued and not yet finished (in flight included).
  size_t backlog() const ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the latest operation queued or in flight for `key` is a durable delete.
  bool RemovalPending(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Op {
    std::optional<MemberRecord> record;  // Empty: the key is removed.
    bool durable = false;                // Put/Update/Remove (true) or Observe (false).
    bool create = false;                 // A durable write may create the record (Put).
  };

  void Enqueue(const PublicKey& key, Op op) ABSL_LOCKS_EXCLUDED(mu_);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the pending quarantine snapshot (writer thread, mu_ held on entry and exit, released
  // while the store writes). Returns how long to pause after a failure.
  absl::Duration WriteQuarantine() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Apply(const PublicKey& key, const Op& op);  // Writer thread only.
  bool IdleFor(const PublicKey& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  MemberStore* const store_;  // Writer thread only, after construction.
  MemberWriterCounters* const counters_;
  const Options options_;
  mutable absl::Mutex mu_;
  std::map<PublicKey, Op> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<PublicKey> order_ ABSL_GUARDED_BY(mu_);  // Keys of pending_, oldest first.
  std::optional<PublicKey> in_flight_ ABSL_GUARDED_BY(mu_);
  bool in_flight_removes_ ABSL_GUARDED_BY(mu_) = false;  // the in-flight op is a durable delete
  // The quarantine snapshot to write, and whether one is being written.
  std::optional<std::vector<QuarantineEntry>> quarantine_ ABSL_GUARDED_BY(mu_);
  bool quarantine_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  // The last error per key whose latest operation failed (cleared by a success or a new op).
  std::map<PublicKey, absl::Status> errors_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stop_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  Backoff backoff_;  // Writer thread only.
  std::thread thread_;
};

}  // namespace tunnelmesh
