// A MemberStore for unit tests: records in memory, and a latch that makes Put and Remove block
// (a slow API server) and a way to make the next calls fail (an API server that errs), so tests
// can check what waits for the store and what does not; it keeps the quarantine too, and the
// order of the removes and quarantine saves that succeeded.
//
// Thread-safe (the coordinator's writer thread calls it while the test thread inspects it), except
// members(), which the Coordinator reads once at construction.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "operator/coordinator/state_store.h"

namespace tunnelmesh {

class FakeMemberStore final : public MemberStore {
 public:
  const std::map<PublicKey, MemberRecord>& members() const override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return members_;
  }

  absl::Status Put(const MemberRecord& record) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = WaitAndMaybeFail(); !s.ok()) return s;
    members_[record.public_key] = record;
    ++puts_;
    return absl::OkStatus();
  }

  absl::Status Remove(const PublicKey& key) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = WaitAndMaybeFail(); !s.ok()) return s;
    members_.erase(key);
    ++removes_;
    ops_.push_back("remove");
    return absl::OkStatus();
  }

  // Blocks and fails like Put and Remove.
  absl::Status SaveQuarantine(const std::vector<QuarantineEntry>& entries) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = WaitAndMaybeFail(); !s.ok()) return s;
    quarantine_ = entries;
    ops_.push_back("quarantine");
    return absl::OkStatus();
  }
  std::vector<QuarantineEntry> quarantine() const override {
    absl::MutexLock lock(&mu_);
    return quarantine_;
  }
  // The durable writes that succeeded, in order: "remove", "quarantine".
  std::vector<std::string> ops() const {
    absl::MutexLock lock(&mu_);
    return ops_;
  }

  void Observe(const PublicKey& key, const MemberRecord* record) override {
    absl::MutexLock lock(&mu_);
    if (record == nullptr) {
      members_.erase(key);
    } else {
      members_[key] = *record;
    }
  }

  // While blocked, Put and Remove wait (counted in waiting()) until Unblock.
  void Block() {
    absl::MutexLock lock(&mu_);
    blocked_ = true;
  }
  void Unblock() {
    absl::MutexLock lock(&mu_);
    blocked_ = false;
  }
  // The next `count` Put/Remove calls return `status`.
  void FailNext(int count, absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_count_ = count;
    fail_status_ = std::move(status);
  }
  // Polls until `count` calls wait on the latch. False after `timeout`.
  bool AwaitWaiting(int count, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_ >= count; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

  std::optional<MemberRecord> Stored(const PublicKey& key) const {
    absl::MutexLock lock(&mu_);
    auto it = members_.find(key);
    if (it == members_.end()) return std::nullopt;
    return it->second;
  }
  int puts() const {
    absl::MutexLock lock(&mu_);
    return puts_;
  }
  int removes() const {
    absl::MutexLock lock(&mu_);
    return removes_;
  }

 private:
  absl::Status WaitAndMaybeFail() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++waiting_;
    auto open = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !blocked_; };
    mu_.Await(absl::Condition(&open));
    --waiting_;
    if (fail_count_ > 0) {
      --fail_count_;
      return fail_status_;
    }
    return absl::OkStatus();
  }

  mutable absl::Mutex mu_;
  std::map<PublicKey, MemberRecord> members_ ABSL_GUARDED_BY(mu_);
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_count_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status fail_status_ ABSL_GUARDED_BY(mu_);
  int puts_ ABSL_GUARDED_BY(mu_) = 0;
  int removes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<QuarantineEntry> quarantine_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> ops_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
