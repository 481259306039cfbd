#include "operator/coordinator/subscription.h"

#include <utility>

namespace tunnelmesh {

Subscription::Subscription(Options options) : options_(std::move(options)) {}

bool Subscription::Push(coord::MapUpdate update) {
  absl::MutexLock lock(&mu_);
  if (cancelled_ || needs_full_map_) return false;  // A full map will carry this change.
  if (queue_.size() >= options_.max_pending) {
    queue_.clear();
    pushed_at_.clear();
    needs_full_map_ = true;
    ++collapses_;
    if (options_.collapses != nullptr) options_.collapses->fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  queue_.push_back(std::move(update));
  pushed_at_.push_back(std::chrono::steady_clock::now());
  return queue_.size() == 1;
}

bool Subscription::RequestFullMap() {
  absl::MutexLock lock(&mu_);
  if (cancelled_ || needs_full_map_) return false;
  queue_.clear();
  pushed_at_.clear();
  needs_full_map_ = true;
  return true;
}

bool Subscription::Cancel(absl::Status reason) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  reason_ = std::move(reason);
  cancelled_ = true;
  return true;
}

void Subscription::Wake() {
  std::shared_ptr<const std::function<void()>> hook;
  {
    absl::MutexLock lock(&mu_);
    hook = wake_hook_;
  }
  if (hook != nullptr && *hook) (*hook)();
}

void Subscription::SetWakeHook(std::function<void()> hook) {
  auto shared = hook ? std::make_shared<const std::function<void()>>(std::move(hook)) : nullptr;
  absl::MutexLock lock(&mu_);
  wake_hook_ = std::move(shared);
}

Subscription::Poll Subscription::TakeLocked(coord::MapUpdate* out, bool* refill) {
  if (cancelled_) return Poll::kEnded;
  if (needs_full_map_) {
    *refill = true;
    return Poll::kEmpty;
  }
  if (queue_.empty()) return Poll::kEmpty;
  *out = std::move(queue_.front());
  queue_.pop_front();
  const std::optional<std::chrono::steady_clock::time_point> pushed = pushed_at_.front();
  pushed_at_.pop_front();
  if (pushed && options_.fanout_seconds != nullptr) {
    options_.fanout_seconds->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - *pushed).count());
  }
  return Poll::kUpdate;
}

Subscription::Poll Subscription::TryNext(coord::MapUpdate* out) {
  bool refill = false;
  {
    absl::MutexLock lock(&mu_);
    Poll poll = TakeLocked(out, &refill);
    if (!refill) return poll;
  }
  if (options_.refill) options_.refill(this);
  absl::MutexLock lock(&mu_);
  refill = false;
  Poll poll = TakeLocked(out, &refill);
  // Still collapsed: the refill found nothing to send (the member is gone) or a new backlog
  // collapsed at once; the caller polls again after the next wake.
  return poll;
}

bool Subscription::Next(coord::MapUpdate* out, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    Poll poll = TryNext(out);
    if (poll == Poll::kUpdate) return true;
    if (poll == Poll::kEnded) return false;
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return cancelled_ || needs_full_map_ || !queue_.empty();
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) return false;
  }
}

void Subscription::ResetWithFullMap(coord::MapUpdate full) {
  absl::MutexLock lock(&mu_);
  queue_.clear();
  pushed_at_.clear();
  needs_full_map_ = false;
  if (!cancelled_) {
    queue_.push_back(std::move(full));
    pushed_at_.push_back(std::nullopt);
  }
}

bool Subscription::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool Subscription::HasWork() const {
  absl::MutexLock lock(&mu_);
  return cancelled_ || needs_full_map_ || !queue_.empty();
}

absl::Status Subscription::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

size_t Subscription::pending() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

uint64_t Subscription::collapses() const {
  absl::MutexLock lock(&mu_);
  return collapses_;
}

}  // namespace tunnelmesh
