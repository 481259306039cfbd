// Linked into test binaries of the TSAN leg only (cmake/Testing.cmake, TM_TSAN).
//
// Debian's abseil is built without ThreadSanitizer, so TSAN cannot see absl::Mutex lock and
// unlock (they run inside the uninstrumented libabsl_synchronization.so and block in futex calls
// TSAN does not intercept) and would report a race on every field an absl::Mutex guards. This file
// defines absl::Mutex's and absl::CondVar's locking and waiting functions in the test executable,
// where they take precedence over the shared library's definitions (ELF symbol interposition),
// forwards each call to the library's own function (dlsym with RTLD_NEXT), and tells TSAN about
// the happens-before edges through its public annotation calls: a release before the mutex is
// given up (unlock, or the unlock inside a wait), an acquire after it is held again. Nothing else
// changes: the real absl code does the locking.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* fn = dlsym(RTLD_NEXT, mangled);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found in abseil (another abseil version?)\n",
                 mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN
namespace {

// abseil evaluates a waiter's condition inside the library (on the waiting thread before it
// blocks and after it took the mutex back, or on a thread releasing the mutex), and a waiting
// thread gives the mutex up inside the library too, where no annotation of the functions below
// runs. The condition is wrapped so that each evaluation, which always happens with the mutex
// held, acquires the mutex for TSAN before and releases it after (the waiter may block next).
struct AnnotatedCondition {
  Mutex* mu;
  const Condition* condition;
};

bool EvalAnnotated(AnnotatedCondition* c) {
  __tsan_acquire(c->mu);
  const bool result = c->condition->Eval();
  __tsan_release(c->mu);
  return result;
}

}  // namespace
ABSL_NAMESPACE_END
}  // namespace absl

namespace absl {
ABSL_NAMESPACE_BEGIN

#define TM_REAL(type, name) static const auto real = Real<type>(name)

void Mutex::Lock() {
  TM_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  TM_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  TM_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  TM_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::Unlock() {
  TM_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  TM_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  TM_REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{this, &cond};
  real(this, Condition(&EvalAnnotated, &annotated));
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  TM_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
          "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  AnnotatedCondition annotated{this, &cond};
  const bool result = real(this, Condition(&EvalAnnotated, &annotated), timeout);
  __tsan_acquire(this);
  return result;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  TM_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
          "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{this, &cond};
  const bool result = real(this, Condition(&EvalAnnotated, &annotated), deadline);
  __tsan_acquire(this);
  return result;
}

void Mutex::Await(const Condition& cond) {
  TM_REAL(void (*)(Mutex*, const Condition&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  AnnotatedCondition annotated{this, &cond};
  __tsan_release(this);
  real(this, Condition(&EvalAnnotated, &annotated));
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  TM_REAL(bool (*)(Mutex*, const Condition&, absl::Duration),
          "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  AnnotatedCondition annotated{this, &cond};
  const bool result = real(this, Condition(&EvalAnnotated, &annotated), timeout);
  __tsan_acquire(this);
  return result;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  TM_REAL(bool (*)(Mutex*, const Condition&, absl::Time),
          "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_release(this);
  AnnotatedCondition annotated{this, &cond};
  const bool result = real(this, Condition(&EvalAnnotated, &annotated), deadline);
  __tsan_acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  TM_REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  TM_REAL(bool (*)(CondVar*, Mutex*, absl::Duration),
          "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool result = real(this, mu, timeout);
  __tsan_acquire(mu);
  return result;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  TM_REAL(bool (*)(CondVar*, Mutex*, absl::Time),
          "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool result = real(this, mu, deadline);
  __tsan_acquire(mu);
  return result;
}

#undef TM_REAL

ABSL_NAMESPACE_END
}  // namespace absl

namespace {

// abseil's lock-order (deadlock) detector keeps a graph behind an internal spin lock that TSAN
// cannot see either, so its bookkeeping would be reported as racing. It is turned off in these
// binaries, as the agent turns it off in production (a graph lookup per lock on the packet path).
const bool kDeadlockDetectionOff = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace
