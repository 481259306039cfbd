#include "operator/reconcilers/policy_reconciler.h"

#include "lib/base/log.h"
#include "operator/api/peer_policy.h"
#include "operator/kube/conditions.h"
#include "operator/kube/object.h"

namespace tunnelmesh {

absl::StatusOr<Result> PolicyReconciler::Reconcile(const std::string& name) {
  std::vector<PeerPolicySpec> accepted;
  std::optional<nlohmann::json> target;
  Verdict verdict;
  for (const nlohmann::json& object : policies_->Snapshot()) {
    Verdict v;
    absl::StatusOr<PeerPolicySpec> policy = ParsePeerPolicy(object);
    if (!policy.ok()) {
      v = {false, "InvalidSpec", std::string(policy.status().message())};
    } else if (!meshes_->Find("", policy->mesh).has_value()) {
      v = {false, "MeshNotFound",
           "spec.mesh names Mesh \"" + policy->mesh +
               "\", which does not exist (kubectl get meshes)"};
    } else {
      v = {true, "Accepted",
           "Valid and stored by the coordinator. Not enforced yet: this release does not program "
           "packet filters from policies."};
      accepted.push_back(*std::move(policy));
    }
    if (kube::ObjectName(object) == name) {
      target = object;
      verdict = v;
    }
  }
  const size_t count = accepted.size();
  coordinator_->SetPolicies(std::move(accepted));
  TM_LOG_DEBUG("policies stored: {}", count);
  if (!target) {
    rejected_.erase(name);
    status_.Forget(name);
    return Result{};
  }
  if (verdict.ok) {
    rejected_.erase(name);
  } else if (auto old = rejected_.find(name);
             old == rejected_.end() || old->second != verdict.message) {
    TM_LOG_WARN("PeerPolicy {} rejected: {}", name, verdict.message);
    events_->Warning(*target, verdict.reason, verdict.message);
    rejected_[name] = verdict.message;
  }
  nlohmann::json status = kube::ObjectStatus(*target);
  kube::SetCondition(&status, "Ready", verdict.ok, verdict.reason, verdict.message,
                     kube::ObjectGeneration(*target));
  status_.Write(*target, status);
  return Result{};
}

}  // namespace tunnelmesh
