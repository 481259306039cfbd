// Leader election on a coordination.k8s.io/v1 Lease, like client-go's leaderelection: acquire
// when the lease is free (no holderIdentity), expired (renewTime + leaseDurationSeconds < now) or
// already ours; renew every retry_period; a leader that cannot renew within renew_deadline gives
// leadership up. Every write is an Update carrying the resourceVersion read, so two candidates
// never both win (the loser gets a conflict and tries again later). leaseTransitions counts
// takeovers. Times are MicroTime in UTC ("2026-11-25T11:40:00.123456Z").
//
// Expiry compares the lease's renewTime with our wall clock, so candidates' clocks should agree
// to well within lease_duration - renew_deadline.
//
// Threads: Acquire() blocks its caller; StartRenewing() runs a renew thread of its own, which
// calls on_lost (once) on that thread. Release() and the destructor stop that thread first.
// IsLeader() may be called from any thread. last_error_ belongs to the thread that tries (the
// caller of Acquire, later the renew thread, never both at once); mu_ guards only stopping_ and is
// never held during an API call.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "operator/kube/api.h"

namespace tunnelmesh::kube {

class LeaderElector {
 public:
  struct Options {
    std::string ns;
    std::string lease_name;
    std::string identity;  // unique per candidate: pod name, or host name + pid
    absl::Duration lease_duration = absl::Seconds(15);
    absl::Duration renew_deadline = absl::Seconds(10);
    absl::Duration retry_period = absl::Seconds(2);
  };

  // `client` must outlive the elector.
  LeaderElector(Api* client, Options options);
  // Stops renewing without releasing the lease (it then expires): use Release() on a clean exit.
  ~LeaderElector();
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  // Blocks until this process leads (OK) or *stop becomes true (kCancelled), trying every
  // retry_period.
  [[nodiscard]] absl::Status Acquire(const std::atomic<bool>* stop) ABSL_LOCKS_EXCLUDED(mu_);
  // After Acquire(): renews on a thread of its own; calls on_lost once if leadership is lost.
  void StartRenewing(std::function<void()> on_lost);
  // Stops renewing and gives the lease up (clears holderIdentity) so that a successor takes over
  // at once; used on clean shutdown. Best effort: a failure is logged.
  void Release() ABSL_LOCKS_EXCLUDED(mu_);
  bool IsLeader() const { return leader_.load(std::memory_order_acquire); }

  // One attempt to acquire or renew: true when we hold the lease afterwards. Public for tests.
  [[nodiscard]] absl::StatusOr<bool> TryAcquireOrRenew();

 private:
  void StopRenewing() ABSL_LOCKS_EXCLUDED(mu_);
  void RenewLoop(std::function<void()> on_lost) ABSL_LOCKS_EXCLUDED(mu_);  // renew thread
  nlohmann::json LeaseSpec(const nlohmann::json& old_spec, absl::Time now) const;

  Api* const client_;
  const Options options_;
  std::atomic<bool> leader_{false};
  std::string last_error_;  // of the thread that tries (Acquire or the renew loop)

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread renewer_;
};

}  // namespace tunnelmesh::kube
