#include "operator/kube/leader.h"

#include <pthread.h>

#include <utility>

#include "lib/base/log.h"
#include "operator/kube/conditions.h"

namespace tunnelmesh::kube {

namespace {

int64_t SpecInt(const nlohmann::json& spec, const char* key) {
  auto it = spec.find(key);
  return it != spec.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace

LeaderElector::LeaderElector(Api* client, Options options)
    : client_(client), options_(std::move(options)) {}

LeaderElector::~LeaderElector() { StopRenewing(); }

nlohmann::json LeaderElector::LeaseSpec(const nlohmann::json& old_spec, absl::Time now) const {
  const bool ours = StringAt(old_spec, "holderIdentity") == options_.identity;
  nlohmann::json spec = {
      {"holderIdentity", options_.identity},
      {"leaseDurationSeconds",
       std::max<int64_t>(
           1, absl::ToInt64Seconds(absl::Ceil(options_.lease_duration, absl::Seconds(1))))},
      {"renewTime", FormatMicroTime(now)},
      {"acquireTime", ours && old_spec.contains("acquireTime")
                          ? old_spec["acquireTime"]
                          : nlohmann::json(FormatMicroTime(now))},
      {"leaseTransitions", SpecInt(old_spec, "leaseTransitions") + (ours ? 0 : 1)},
  };
  if (old_spec.is_null()) spec["leaseTransitions"] = 0;
  return spec;
}

absl::StatusOr<bool> LeaderElector::TryAcquireOrRenew() {
  const absl::Time now = absl::Now();
  absl::StatusOr<nlohmann::json> lease = client_->Get(kLeases, options_.ns, options_.lease_name);
  if (absl::IsNotFound(lease.status())) {
    nlohmann::json object = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", options_.lease_name}, {"namespace", options_.ns}}},
        {"spec", LeaseSpec(nlohmann::json(), now)}};
    absl::StatusOr<nlohmann::json> created = client_->Create(kLeases, options_.ns, object);
    if (absl::IsAlreadyExists(created.status())) return false;
    if (!created.ok()) return created.status();
    return true;
  }
  if (!lease.ok()) return lease.status();
  const nlohmann::json spec = lease->contains("spec") && (*lease)["spec"].is_object()
                                  ? (*lease)["spec"]
                                  : nlohmann::json::object();
  const std::string holder = StringAt(spec, "holderIdentity");
  if (!holder.empty() && holder != options_.identity) {
    const std::optional<absl::Time> renewed = ParseRfc3339(StringAt(spec, "renewTime"));
    const absl::Duration duration = absl::Seconds(SpecInt(spec, "leaseDurationSeconds"));
    if (renewed.has_value() && *renewed + duration >= now) return false;  // held by another
  }
  nlohmann::json updated = *lease;
  updated["spec"] = LeaseSpec(spec, now);
  absl::StatusOr<nlohmann::json> written = client_->Update(kLeases, options_.ns, updated);
  if (IsConflict(written.status())) return false;
  if (!written.ok()) return written.status();
  if (holder != options_.identity) {
    TM_LOG_INFO("leader election: acquired lease={}/{} identity={} previous_holder={}", options_.ns,
                options_.lease_name, options_.identity, holder);
  }
  return true;
}

absl::Status LeaderElector::Acquire(const std::atomic<bool>* stop) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = false;
  }
  while (stop == nullptr || !stop->load(std::memory_order_acquire)) {
    absl::StatusOr<bool> acquired = TryAcquireOrRenew();
    if (acquired.ok() && *acquired) {
      leader_.store(true, std::memory_order_release);
      last_error_.clear();
      return absl::OkStatus();
    }
    if (!acquired.ok() && acquired.status().ToString() != last_error_) {
      last_error_ = acquired.status().ToString();
      TM_LOG_WARN("leader election: cannot read or write lease={}/{} error={}", options_.ns,
                  options_.lease_name, last_error_);
    }
    // Short sleeps, so that *stop is seen within ~0.1 s.
    const absl::Time wake = absl::Now() + options_.retry_period;
    while (absl::Now() < wake) {
      if (stop != nullptr && stop->load(std::memory_order_acquire)) break;
      absl::SleepFor(std::min(absl::Milliseconds(100), wake - absl::Now()));
    }
  }
  return absl::CancelledError("leader election for lease " + options_.ns + "/" +
                              options_.lease_name + " stopped before acquiring it");
}

void LeaderElector::StartRenewing(std::function<void()> on_lost) {
  if (renewer_.joinable()) return;
  renewer_ = std::thread([this, on_lost = std::move(on_lost)]() mutable {
    pthread_setname_np(pthread_self(), "tm-leader");
    RenewLoop(std::move(on_lost));
  });
}

void LeaderElector::RenewLoop(std::function<void()> on_lost) {
  absl::Time last_renew = absl::Now();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.retry_period)) return;
    }
    absl::StatusOr<bool> renewed = TryAcquireOrRenew();
    const absl::Time now = absl::Now();
    if (renewed.ok() && *renewed) {
      last_renew = now;
      continue;
    }
    // Someone else holds it now (renewed == false) or we could not renew for renew_deadline.
    if (!renewed.ok()) {
      TM_LOG_WARN("leader election: renew failed lease={}/{} error={}", options_.ns,
                  options_.lease_name, renewed.status().ToString());
      if (now - last_renew < options_.renew_deadline) continue;
    }
    leader_.store(false, std::memory_order_release);
    TM_LOG_WARN("leader election: lost lease={}/{} identity={} reason={}", options_.ns,
                options_.lease_name, options_.identity,
                renewed.ok() ? "another candidate holds it" : "renew deadline exceeded");
    if (on_lost) on_lost();
    return;
  }
}

void LeaderElector::StopRenewing() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (renewer_.joinable()) renewer_.join();
}

void LeaderElector::Release() {
  StopRenewing();
  if (!leader_.exchange(false)) return;
  absl::StatusOr<nlohmann::json> lease = client_->Get(kLeases, options_.ns, options_.lease_name);
  if (!lease.ok()) {
    TM_LOG_WARN("leader election: release failed: {}", lease.status().ToString());
    return;
  }
  nlohmann::json& spec = (*lease)["spec"];
  if (!spec.is_object() || StringAt(spec, "holderIdentity") != options_.identity) return;
  spec["holderIdentity"] = "";
  spec["renewTime"] = FormatMicroTime(absl::Now());
  spec["leaseDurationSeconds"] = 1;
  absl::StatusOr<nlohmann::json> written = client_->Update(kLeases, options_.ns, *lease);
  if (!written.ok()) {
    TM_LOG_WARN("leader election: release failed: {}", written.status().ToString());
  } else {
    TM_LOG_INFO("leader election: released lease={}/{} identity={}", options_.ns,
                options_.lease_name, options_.identity);
  }
}

}  // namespace tunnelmesh::kube
