#include "operator/coordinator/member_writer.h"

#include <utility>

#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

}  // namespace

MemberWriter::MemberWriter(MemberStore* store, MemberWriterCounters* counters, Options options)
    : store_(store),
      counters_(counters),
      options_(options),
      backoff_(options.initial_backoff, options.max_backoff, options.seed) {
  thread_ = std::thread([this] { Run(); });
}

MemberWriter::~MemberWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    stop_deadline_ = absl::Now() + options_.flush_on_stop;
  }
  thread_.join();
}

void MemberWriter::Put(const MemberRecord& record) {
  Enqueue(record.public_key, Op{record, /*durable=*/true, /*create=*/true});
}

void MemberWriter::Update(const MemberRecord& record) {
  Enqueue(record.public_key, Op{record, /*durable=*/true, /*create=*/false});
}

void MemberWriter::Remove(const PublicKey& key) {
  Enqueue(key, Op{std::nullopt, /*durable=*/true, /*create=*/false});
}

void MemberWriter::Observe(const PublicKey& key, const MemberRecord* record) {
  Enqueue(key, Op{record != nullptr ? std::optional<MemberRecord>(*record) : std::nullopt,
                  /*durable=*/false, /*create=*/false});
}

void MemberWriter::SaveQuarantine(std::vector<QuarantineEntry> entries) {
  absl::MutexLock lock(&mu_);
  if (quarantine_) counters_->coalesced.fetch_add(1, std::memory_order_relaxed);
  quarantine_ = std::move(entries);
}

absl::Duration MemberWriter::WriteQuarantine() {
  std::vector<QuarantineEntry> entries = *std::move(quarantine_);
  quarantine_.reset();
  quarantine_in_flight_ = true;
  mu_.Unlock();
  absl::Status status = store_->SaveQuarantine(entries);
  mu_.Lock();
  quarantine_in_flight_ = false;
  if (status.ok()) {
    counters_->writes.fetch_add(1, std::memory_order_relaxed);
    backoff_.Reset();
    return absl::ZeroDuration();
  }
  counters_->failures.fetch_add(1, std::memory_order_relaxed);
  const bool newer = quarantine_.has_value();
  const bool retry = Retryable(status) && !stopping_;
  TM_LOG_WARN("member store: writing the quarantine failed{}: {}",
              newer   ? " (a newer one is queued)"
              : retry ? " (retrying)"
                      : "",
              status.ToString());
  if (newer || !retry) return absl::ZeroDuration();
  counters_->retries.fetch_add(1, std::memory_order_relaxed);
  quarantine_ = std::move(entries);
  return absl::FromChrono(backoff_.Next());
}

void MemberWriter::Enqueue(const PublicKey& key, Op op) {
  absl::MutexLock lock(&mu_);
  errors_.erase(key);
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    pending_.emplace(key, std::move(op));
    order_.push_back(key);
    return;
  }
  // The latest record wins; it must still be written if any operation it replaces had to be.
  it->second.record = std::move(op.record);
  it->second.durable = it->second.durable || op.durable;
  it->second.create = it->second.create || op.create;
  counters_->coalesced.fetch_add(1, std::memory_order_relaxed);
}

absl::Status MemberWriter::Apply(const PublicKey& key, const Op& op) {
  if (!op.durable) {
    store_->Observe(key, op.record ? &*op.record : nullptr);
    return absl::OkStatus();
  }
  if (!op.record) return store_->Remove(key);
  return op.create ? store_->Put(*op.record) : store_->Update(*op.record);
}

void MemberWriter::Run() {
  while (true) {
    PublicKey key;
    Op op;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !order_.empty() || quarantine_.has_value();
      };
      mu_.Await(absl::Condition(&ready));
      if ((order_.empty() && !quarantine_) || (stopping_ && absl::Now() >= stop_deadline_)) {
        if (!order_.empty() || quarantine_) {
          TM_LOG_ERROR("member store: {} queued writes abandoned at shutdown",
                       order_.size() + (quarantine_ ? 1 : 0));
        }
        return;
      }
      // The quarantine goes first: see the header.
      if (quarantine_) {
        const absl::Duration pause = WriteQuarantine();
        if (pause > absl::ZeroDuration()) {
          auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
          mu_.AwaitWithTimeout(absl::Condition(&stopping), pause);
        }
        continue;
      }
      key = order_.front();
      order_.pop_front();
      auto it = pending_.find(key);
      op = std::move(it->second);
      pending_.erase(it);
      in_flight_ = key;
      in_flight_removes_ = op.durable && !op.record;
    }
    absl::Status status = Apply(key, op);
    absl::Duration pause = absl::ZeroDuration();
    {
      absl::MutexLock lock(&mu_);
      in_flight_.reset();
      if (status.ok()) {
        if (pending_.count(key) == 0) errors_.erase(key);
        counters_->writes.fetch_add(1, std::memory_order_relaxed);
        backoff_.Reset();
        continue;
      }
      counters_->failures.fetch_add(1, std::memory_order_relaxed);
      const bool newer = pending_.count(key) > 0;
      const bool retry = Retryable(status) && !stopping_;
      TM_LOG_WARN("member store: writing member {} failed{}: {}", key.Short(),
                  newer   ? " (a newer record is queued)"
                  : retry ? " (retrying)"
                          : "",
                  status.ToString());
      if (newer) continue;  // The newer operation carries the latest state; it runs next.
      errors_[key] = status;
      if (!retry) continue;
      counters_->retries.fetch_add(1, std::memory_order_relaxed);
      pending_.emplace(key, std::move(op));
      order_.push_back(key);
      pause = absl::FromChrono(backoff_.Next());
    }
    // A failed store is likely failing for every key: pause the whole queue, waking early only to
    // stop.
    absl::MutexLock lock(&mu_);
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopping), pause);
  }
}

bool MemberWriter::IdleFor(const PublicKey& key) const {
  return pending_.count(key) == 0 && in_flight_ != key;
}

absl::Status MemberWriter::WaitDurable(const PublicKey& key, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this, &key]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return IdleFor(key); };
  const bool done = mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  auto error = errors_.find(key);
  if (done) return error == errors_.end() ? absl::OkStatus() : error->second;
  return absl::UnavailableError(
      "the member store has not written this member's record yet" +
      (error == errors_.end() ? std::string(" (it is slow)")
                              : " (retrying after: " + std::string(error->second.message()) + ")"));
}

bool MemberWriter::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return order_.empty() && !in_flight_.has_value() && !quarantine_ && !quarantine_in_flight_;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

bool MemberWriter::RemovalPending(const PublicKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(key);
  if (it != pending_.end()) return it->second.durable && !it->second.record;
  return in_flight_ == key && in_flight_removes_;
}

size_t MemberWriter::backlog() const {
  absl::MutexLock lock(&mu_);
  return pending_.size() + (in_flight_ ? 1 : 0) + (quarantine_ ? 1 : 0) +
         (quarantine_in_flight_ ? 1 : 0);
}

}  // namespace tunnelmesh
