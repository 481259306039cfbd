#include "operator/kube/work_queue.h"

namespace tunnelmesh::kube {

void WorkQueue::AddLocked(const std::string& key) {
  if (shut_down_) return;
  if (processing_.contains(key)) {
    dirty_.insert(key);
    return;
  }
  if (queued_.contains(key)) return;
  if (queued_.size() >= options_.max_keys) {
    counters_.dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queued_.insert(key);
  queue_.push_back(key);
}

void WorkQueue::Add(const std::string& key) {
  counters_.adds.fetch_add(1, std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  AddLocked(key);
}

void WorkQueue::AddAfter(const std::string& key, absl::Duration delay) {
  if (delay <= absl::ZeroDuration()) {
    Add(key);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  // One pending delayed entry per key is enough: keep the earliest.
  const absl::Time at = absl::Now() + delay;
  for (auto it = delayed_.begin(); it != delayed_.end(); ++it) {
    if (it->second != key) continue;
    if (it->first <= at) return;
    delayed_.erase(it);
    break;
  }
  if (delayed_.size() >= options_.max_keys) {
    counters_.dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  delayed_.emplace(at, key);
}

void WorkQueue::AddRateLimited(const std::string& key) {
  counters_.retries.fetch_add(1, std::memory_order_relaxed);
  std::chrono::milliseconds delay;
  {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Backoff>& backoff = backoff_[key];
    if (backoff == nullptr) {
      backoff = std::make_unique<Backoff>(options_.min_retry, options_.max_retry,
                                          options_.seed + backoff_.size());
    }
    delay = backoff->Next();
  }
  AddAfter(key, absl::FromChrono(delay));
}

void WorkQueue::Forget(const std::string& key) {
  absl::MutexLock lock(&mu_);
  backoff_.erase(key);
}

void WorkQueue::PromoteLocked(absl::Time now) {
  while (!delayed_.empty() && delayed_.begin()->first <= now) {
    const std::string key = delayed_.begin()->second;
    delayed_.erase(delayed_.begin());
    AddLocked(key);
  }
}

std::optional<std::string> WorkQueue::Get(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (true) {
    if (shut_down_) return std::nullopt;
    const absl::Time now = absl::Now();
    PromoteLocked(now);
    if (!queue_.empty()) break;
    if (now >= deadline) return std::nullopt;
    absl::Time wake = deadline;
    if (!delayed_.empty()) wake = std::min(wake, delayed_.begin()->first);
    // Woken by Add and ShutDown through the condition; by time for delayed keys.
    mu_.AwaitWithDeadline(absl::Condition(this, &WorkQueue::HasWorkLocked), wake);
  }
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  queued_.erase(key);
  processing_.insert(key);
  return key;
}

bool WorkQueue::HasWorkLocked() const { return !queue_.empty() || shut_down_; }

void WorkQueue::Done(const std::string& key) {
  absl::MutexLock lock(&mu_);
  processing_.erase(key);
  if (dirty_.erase(key) > 0) AddLocked(key);
}

void WorkQueue::ShutDown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

size_t WorkQueue::size() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

}  // namespace tunnelmesh::kube
