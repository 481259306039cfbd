#include "node-agent/agent/control_loop.h"

#include <utility>
#include <vector>

namespace tunnelmesh {

ControlLoop::ControlLoop(const Clock* clock, size_t max_queued)
    : clock_(clock), max_queued_(max_queued == 0 ? 1 : max_queued) {}

ControlLoop::~ControlLoop() { Stop(); }

bool ControlLoop::Post(Task task) {
  absl::MutexLock lock(&mu_);
  if (stopped_ || queue_.size() >= max_queued_) {
    ++dropped_;
    return false;
  }
  queue_.push_back(std::move(task));
  wake_.Signal();
  return true;
}

ControlLoop::TimerId ControlLoop::RunEvery(Duration period, std::function<void()> fn) {
  if (period <= Duration::zero()) period = std::chrono::milliseconds(1);
  return AddTimer(clock_->Now() + period, period, std::move(fn));
}

ControlLoop::TimerId ControlLoop::RunAt(MonoTime when, std::function<void()> fn) {
  return AddTimer(when, Duration::zero(), std::move(fn));
}

ControlLoop::TimerId ControlLoop::AddTimer(MonoTime deadline, Duration period,
                                           std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  const TimerId id = next_timer_id_++;
  timers_[id] = Timer{deadline, period, std::make_shared<std::function<void()>>(std::move(fn))};
  wake_.Signal();
  return id;
}

void ControlLoop::Cancel(TimerId id) {
  absl::MutexLock lock(&mu_);
  timers_.erase(id);
}

void ControlLoop::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ControlLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  queue_.clear();
  timers_.clear();
}

bool ControlLoop::OnLoopThread() const {
  return loop_thread_id_.load() == std::this_thread::get_id();
}

uint64_t ControlLoop::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

std::optional<MonoTime> ControlLoop::NextDeadlineLocked() const {
  std::optional<MonoTime> next;
  for (const auto& [id, timer] : timers_) {
    if (!next || timer.deadline < *next) next = timer.deadline;
  }
  return next;
}

bool ControlLoop::WorkReadyLocked() const {
  if (!queue_.empty()) return true;
  std::optional<MonoTime> next = NextDeadlineLocked();
  return next && *next <= clock_->Now();
}

size_t ControlLoop::RunOnce() {
  std::deque<Task> batch;
  std::vector<std::shared_ptr<std::function<void()>>> due;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(queue_);
    const MonoTime now = clock_->Now();
    for (auto it = timers_.begin(); it != timers_.end();) {
      Timer& timer = it->second;
      if (timer.deadline > now) {
        ++it;
        continue;
      }
      due.push_back(timer.fn);
      if (timer.period == Duration::zero()) {
        it = timers_.erase(it);
        continue;
      }
      // A loop that fell behind runs a repeating timer once, not once per missed period.
      timer.deadline += timer.period;
      if (timer.deadline <= now) timer.deadline = now + timer.period;
      ++it;
    }
  }
  // Outside the lock: closures post more work and add or cancel timers.
  for (Task& task : batch) std::move(task)();
  for (const auto& fn : due) (*fn)();
  return batch.size() + due.size();
}

size_t ControlLoop::RunUntilIdle() {
  loop_thread_id_ = std::this_thread::get_id();
  size_t total = 0;
  while (true) {
    const size_t ran = RunOnce();
    if (ran == 0) break;
    total += ran;
  }
  loop_thread_id_ = std::thread::id();
  return total;
}

void ControlLoop::Loop() {
  loop_thread_id_ = std::this_thread::get_id();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      while (!stopped_ && !WorkReadyLocked()) {
        std::optional<MonoTime> next = NextDeadlineLocked();
        if (next) {
          wake_.WaitWithTimeout(&mu_, absl::FromChrono(*next - clock_->Now()));
        } else {
          wake_.Wait(&mu_);
        }
      }
      if (stopped_) return;
    }
    RunOnce();
  }
}

}  // namespace tunnelmesh
