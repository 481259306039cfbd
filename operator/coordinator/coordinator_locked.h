// Coordinator::Locked, shared by the files that implement the Coordinator (coordinator.cc,
// coordinator_pods.cc). Internal to operator/coordinator.
#pragma once

#include <memory>
#include <vector>

#include "operator/coordinator/coordinator.h"

namespace tunnelmesh {

// Holds mu_ and wakes the subscribers queued while it was held once it is released, so that a
// reader's wake hook (which may take its own locks and start a gRPC write) never runs under mu_;
// the same for Options::on_change when the state's version moved.
class ABSL_SCOPED_LOCKABLE Coordinator::Locked {
 public:
  explicit Locked(Coordinator* c) ABSL_EXCLUSIVE_LOCK_FUNCTION(c->mu_) : c_(c) {
    c_->mu_.Lock();
    version_ = c_->version_;
  }
  ~Locked() ABSL_UNLOCK_FUNCTION() {
    if (!released_) Release();
  }
  // Unlocks early (the destructor then does nothing).
  void Release() ABSL_UNLOCK_FUNCTION() {
    released_ = true;
    std::vector<std::shared_ptr<Subscription>> wake;
    wake.swap(c_->to_wake_);
    const bool changed = c_->version_ != version_;
    c_->mu_.Unlock();
    for (const std::shared_ptr<Subscription>& sub : wake) sub->Wake();
    if (changed && c_->options_.on_change) c_->options_.on_change();
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Coordinator* const c_;
  uint64_t version_ = 0;
  bool released_ = false;
};

}  // namespace tunnelmesh
