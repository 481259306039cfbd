// The agent's one control thread: every piece of mutable control state (the peer table, the path
// selectors, the endpoint reporter, the coordinator settings) is owned by the thread that runs this
// loop. Other threads (the coordinator watch, the data plane's inbound thread, the control socket,
// the relay's I/O) never touch that state: they Post a closure, and the loop runs it.
//
// The queue is bounded: a Post beyond `max_queued` is dropped and counted (dropped()), never
// queued without limit; callers post work that is safe to lose (a disco datagram the peer resends)
// or that is re-posted by its producer (map updates come with a full map after a reconnect).
//
// Timers (RunEvery/RunAt) run on the loop thread too, against the injected Clock, so tests drive
// them with a FakeClock and RunUntilIdle() on their own thread instead of Start().
//
// Threads: Post, Call, Cancel, dropped() from any thread; timer callbacks and posted closures run
// on the loop thread (or the RunUntilIdle caller) one at a time, in order of posting.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"

namespace tunnelmesh {

class ControlLoop {
 public:
  using Task = absl::AnyInvocable<void() &&>;
  using TimerId = uint64_t;

  // `clock` must outlive the loop. `max_queued` bounds the posted closures waiting to run.
  explicit ControlLoop(const Clock* clock, size_t max_queued = 4096);
  // Stops the thread (if started); closures still queued are dropped unrun.
  ~ControlLoop();
  ControlLoop(const ControlLoop&) = delete;
  ControlLoop& operator=(const ControlLoop&) = delete;

  // Queues `task` to run on the loop thread. Returns false, and counts it, when the queue is full
  // or the loop has stopped. Any thread.
  bool Post(Task task) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `fn` on the loop thread and waits up to `timeout` for its result; nullopt when the queue
  // is full, the loop stopped, or the loop did not get to it in time (it may still run later).
  // Never call from the loop thread itself (it would wait for itself).
  template <typename T>
  std::optional<T> Call(std::function<T()> fn, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // Calls `fn` every `period` (first after one period), until cancelled. Any thread.
  TimerId RunEvery(Duration period, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  // Calls `fn` once at `when` (at once if past). Any thread.
  TimerId RunAt(MonoTime when, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  // A cancelled timer does not fire again (one already running finishes). Any thread.
  void Cancel(TimerId id) ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the loop thread. Call at most once.
  void Start();
  // Stops and joins the loop thread; later Posts fail. Idempotent. Not from the loop thread.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // For tests without Start(): runs queued closures and the timers due at the clock's Now() on the
  // calling thread until none is left; returns how many ran.
  size_t RunUntilIdle() ABSL_LOCKS_EXCLUDED(mu_);

  // True on the thread running the loop (or inside RunUntilIdle).
  bool OnLoopThread() const;
  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Timer {
    MonoTime deadline;
    Duration period{};  // Zero: one shot.
    std::shared_ptr<std::function<void()>> fn;
  };

  TimerId AddTimer(MonoTime deadline, Duration period, std::function<void()> fn)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one batch of queued closures and due timers; returns how many ran.
  size_t RunOnce() ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<MonoTime> NextDeadlineLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const Clock* const clock_;
  const size_t max_queued_;
  std::thread thread_;
  std::atomic<std::thread::id> loop_thread_id_{};

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  std::map<TimerId, Timer> timers_ ABSL_GUARDED_BY(mu_);
  TimerId next_timer_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename T>
std::optional<T> ControlLoop::Call(std::function<T()> fn, absl::Duration timeout) {
  // Shared with the closure: it may run after this call gave up waiting.
  struct Reply {
    absl::Mutex mu;
    std::optional<T> value ABSL_GUARDED_BY(mu);
  };
  auto reply = std::make_shared<Reply>();
  const bool posted = Post([reply, fn = std::move(fn)]() mutable {
    T value = fn();
    absl::MutexLock lock(&reply->mu);
    reply->value = std::move(value);
  });
  if (!posted) return std::nullopt;
  absl::MutexLock lock(&reply->mu);
  reply->mu.AwaitWithTimeout(
      absl::Condition(
          +[](std::optional<T>* v) { return v->has_value(); }, &reply->value),
      timeout);
  return std::move(reply->value);
}

}  // namespace tunnelmesh
