// Token buckets by key (a source address, a member, a pair of members): each key may act `burst`
// times at once and then `rate` times per second. Bounded: at most `max_keys` buckets are kept;
// beyond that the least recently used one is forgotten (its key starts again with a full bucket,
// which only a caller with more than `max_keys` distinct keys can exploit).
//
// Thread-safe: one mutex guards the buckets; no call blocks or calls out under it.
#pragma once

#include <cstddef>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tunnelmesh {

class KeyedRateLimiter {
 public:
  struct Options {
    double rate = 1;   // Tokens added per second.
    double burst = 1;  // Bucket size (and the initial fill).
    size_t max_keys = 65536;
  };

  explicit KeyedRateLimiter(Options options) : options_(options) {}

  // Takes one token from `key`'s bucket; false (and nothing taken) when it is empty.
  bool Allow(std::string_view key, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether `key` has a token now, without taking it.
  bool HasToken(std::string_view key, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
    std::list<std::string>::iterator lru;  // Position in lru_.
  };

  // The key's bucket refilled up to `now` (created full when new), marked most recently used.
  Bucket& Refill(std::string_view key, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  // Keys, most recently used first.
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
