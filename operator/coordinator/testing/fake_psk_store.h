// A PresharedKeyStore for unit tests: records in memory, a count of saves, and a switch that makes
// loads or saves fail (a full disk, an API server that errs). Thread-safe.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "operator/coordinator/psk_store.h"

namespace tunnelmesh {

class FakePresharedKeyStore final : public PresharedKeyStore {
 public:
  absl::StatusOr<PresharedKeyRecords> Load() override {
    absl::MutexLock lock(&mu_);
    if (!fail_with_.ok()) return fail_with_;
    return CloneRecords(records_);
  }
  absl::Status Save(const PresharedKeyRecords& records) override {
    absl::MutexLock lock(&mu_);
    if (!fail_with_.ok()) return fail_with_;
    records_ = CloneRecords(records);
    ++saves_;
    return absl::OkStatus();
  }
  void FailWith(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_with_ = std::move(status);
  }
  int saves() const {
    absl::MutexLock lock(&mu_);
    return saves_;
  }
  PresharedKeyRecords records() const {
    absl::MutexLock lock(&mu_);
    return CloneRecords(records_);
  }

 private:
  mutable absl::Mutex mu_;
  PresharedKeyRecords records_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_with_ ABSL_GUARDED_BY(mu_);
  int saves_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tunnelmesh
