// Refused registrations, for admins: the most recent ones in a bounded ring (`tunnelmesh-operator
// refused` shows them), and a rate-limited log line for each (the first few per source address
// per minute, then one summary of how many more there were). Entries carry the caller's source,
// the key (short), the name and mesh it asked for and the coordinator's reason; never a token.
//
// Threads: any (gRPC handler threads record, the admin socket lists, the standalone main loop
// ticks). mu_ is held only to copy entries in or out; log lines are written after it is released.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tunnelmesh {

struct RefusedJoin {
  absl::Time time;
  std::string source;  // The caller's address and port.
  std::string key;     // Its public key, short ("AbCdEfGh..."), or "-" when it sent none.
  std::string name;    // The name it asked for (--name), possibly empty.
  std::string mesh;    // The mesh it asked for (--mesh), possibly empty.
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string reason;  // The coordinator's answer.
};

class RefusedJoins {
 public:
  struct Options {
    // Entries kept; the oldest go first.
    size_t capacity = 256;
    // Log lines per source address per minute before the rest are only counted.
    uint32_t logged_per_source = 3;
    absl::Duration window = absl::Minutes(1);
    // Sources tracked for the log's rate limit; refusals from more sources share one bucket.
    size_t max_sources = 1024;
  };

  RefusedJoins() : RefusedJoins(Options()) {}
  explicit RefusedJoins(Options options) : options_(options) {}

  // Keeps `entry` and logs it unless its source (`source_key`: its address without the port, so
  // that retries from new ports count together) had its share of lines this minute.
  void Record(RefusedJoin entry, const std::string& source_key) ABSL_LOCKS_EXCLUDED(mu_);
  // Logs the summary of every source whose minute ended by `now` with lines left unlogged.
  // Called about once a second (standalone main loop); Record does the same for its source.
  void Tick(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Oldest first.
  std::vector<RefusedJoin> Recent() const ABSL_LOCKS_EXCLUDED(mu_);

  // Every refusal recorded, and those logged only in a summary.
  uint64_t total() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t unlogged() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t capacity() const { return options_.capacity; }

 private:
  struct Window {
    absl::Time start;
    uint32_t logged = 0;
    uint64_t unlogged = 0;
  };

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<RefusedJoin> ring_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Window> windows_ ABSL_GUARDED_BY(mu_);
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unlogged_ ABSL_GUARDED_BY(mu_) = 0;
};

// Printable text of at most `max` characters from untrusted bytes (names a caller sent): control
// characters and non-ASCII bytes become '?', so that a log line stays one line and readable.
std::string PrintableText(std::string_view text, size_t max = 64);

}  // namespace tunnelmesh
