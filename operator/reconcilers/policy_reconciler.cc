#include "operator/reconcilers/policy_reconciler.h"

#include "lib/base/log.h"
#include "operator/api/peer_policy.h"
#include "operator/kube/conditions.h"
#include "operator/kube/object.h"

namespace tunnelmesh {
namespace {

std::string PolicyMesh(const nlohmann::json& object) {
  auto spec = object.find("spec");
  if (spec == object.end() || !spec->is_object()) return "";
  auto mesh = spec->find("mesh");
  return mesh != spec->end() && mesh->is_string() ? mesh->get<std::string>() : "";
}

}  // namespace

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
      v = {true, "Accepted", "Valid; the coordinator compiles it into its members' filters"};
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
  const int64_t generation = kube::ObjectGeneration(*target);
  kube::SetCondition(&status, "Ready", verdict.ok, verdict.reason, verdict.message, generation);
  Result result;
  std::optional<policy::PolicyStats> stats =
      verdict.ok ? coordinator_->PolicyStatsFor(name) : std::nullopt;
  if (!verdict.ok) {
    kube::SetCondition(&status, "Compiled", false, verdict.reason, verdict.message, generation);
    status.erase("selectedSources");
    status.erase("selectedDestinations");
    status["compiledRules"] = 0;
    kube::SetCondition(&status, "SelectsNothing", kube::ConditionStatus::kUnknown, verdict.reason,
                       "not evaluated: the policy is invalid", generation);
  } else if (!stats) {
    kube::SetCondition(&status, "Compiled", false, "Pending",
                       "waiting for the coordinator to serve Mesh \"" + PolicyMesh(*target) +
                           "\" (see the Mesh's Ready condition)",
                       generation);
    result.requeue_after = kPendingRetry;
  } else {
    status["selectedSources"] = stats->selected_sources;
    status["selectedDestinations"] = stats->selected_destinations;
    status["compiledRules"] = stats->compiled_rules;
    kube::SetCondition(&status, "Compiled", true, "Compiled",
                       "compiled into " + std::to_string(stats->compiled_rules) +
                           " rules across the members' filters",
                       generation);
    const bool no_sources = stats->selected_sources == 0 && !stats->source_blocks;
    const bool no_destinations = stats->selected_destinations == 0 && !stats->destination_blocks;
    if (no_sources || no_destinations) {
      kube::SetCondition(
          &status, "SelectsNothing", true, no_sources ? "NoSources" : "NoDestinations",
          std::string(no_sources ? "spec.from" : "spec.to") +
              " selects no member of the mesh (yet): the policy has no effect. Check its "
              "selectors against kubectl get meshpeers --show-labels",
          generation);
    } else {
      kube::SetCondition(&status, "SelectsNothing", false, "Selected",
                         std::to_string(stats->selected_sources) + " sources, " +
                             std::to_string(stats->selected_destinations) + " destinations",
                         generation);
    }
    result.requeue_after = kResync;
  }
  status_.Write(*target, status);
  return result;
}

}  // namespace tunnelmesh