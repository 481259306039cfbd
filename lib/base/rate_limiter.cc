#include "lib/base/rate_limiter.h"

#include <algorithm>

namespace tunnelmesh {

KeyedRateLimiter::Bucket& KeyedRateLimiter::Refill(std::string_view key, absl::Time now) {
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_keys && !lru_.empty()) {
      buckets_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.emplace_front(key);
    it = buckets_.emplace(std::string(key), Bucket{options_.burst, now, lru_.begin()}).first;
    return it->second;
  }
  Bucket& bucket = it->second;
  if (now > bucket.updated) {
    const double elapsed = absl::ToDoubleSeconds(now - bucket.updated);
    bucket.tokens = std::min(options_.burst, bucket.tokens + elapsed * options_.rate);
    bucket.updated = now;
  }
  lru_.splice(lru_.begin(), lru_, bucket.lru);
  return bucket;
}

bool KeyedRateLimiter::Allow(std::string_view key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  Bucket& bucket = Refill(key, now);
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

bool KeyedRateLimiter::HasToken(std::string_view key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  return Refill(key, now).tokens >= 1;
}

size_t KeyedRateLimiter::size() const {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

}  // namespace tunnelmesh
