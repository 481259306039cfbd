#include "operator/reconcilers/policy_reconciler.h"

#include "lib/base/log.h"
#include "operator/kube/api_status.h"
#include "operator/coordinator/policy.h"
#include "operator/kube/conditions.h"

namespace tunnelmesh {
kube::Informer::Handlers PolicyReconciler::Handlers() {
  kube::Informer::Handlers h;
  h.on_upsert = [this](const nlohmann::json&) { Reconcile(); };
  h.on_delete = [this](const nlohmann::json&) { Reconcile(); };
  h.on_synced = [this] { Reconcile(); };
  return h;
}

void PolicyReconciler::Reconcile() {
  if (informer_ == nullptr) return;
  std::vector<PeerPolicySpec> accepted;
  std::map<std::string, Verdict> verdicts;
  std::vector<std::pair<nlohmann::json, Verdict>> rejected;
  for (const nlohmann::json& object : informer_->Snapshot()) {
    const std::string name = ObjectName(object);
    Verdict v;
    absl::StatusOr<PeerPolicySpec> policy = ParsePeerPolicy(object);
    if (!policy.ok()) {
      v = {false, "InvalidSpec", std::string(policy.status().message())};
    } else if (meshes_ != nullptr && !meshes_->Find("", policy->mesh).has_value()) {
      v = {false, "MeshNotFound",
           "spec.mesh names Mesh \"" + policy->mesh + "\", which does not exist (kubectl get "
           "meshes)"};
    } else {
      v = {true, "Accepted",
           "Valid and stored by the coordinator. Not enforced yet: this release does not program "
           "packet filters from policies."};
      accepted.push_back(*std::move(policy));
    }
    if (!v.ok) rejected.emplace_back(object, v);
    verdicts[name] = v;
  }
  const size_t count = accepted.size();
  coordinator_->SetPolicies(std::move(accepted));
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [object, v] : rejected) {
    auto old = verdicts_.find(ObjectName(object));
    if (old == verdicts_.end() || old->second.message != v.message) {
      TM_LOG_WARN("PeerPolicy {} rejected: {}", ObjectName(object), v.message);
      events_->Warning(object, v.reason, v.message);
    }
  }
  verdicts_ = std::move(verdicts);
  TM_LOG_DEBUG("policies stored: {}", count);
}

void PolicyReconciler::WriteStatus() {
  if (informer_ == nullptr || !informer_->HasSynced()) return;
  for (const nlohmann::json& object : informer_->Snapshot()) {
    nlohmann::json status = ObjectStatus(object);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto v = verdicts_.find(ObjectName(object));
      if (v == verdicts_.end()) continue;
      kube::SetCondition(&status, "Ready", v->second.ok, v->second.reason, v->second.message,
                         ObjectGeneration(object));
    }
    status_.Write(object, status);
  }
}

}  // namespace tunnelmesh
