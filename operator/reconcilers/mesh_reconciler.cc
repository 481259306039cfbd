#include "operator/reconcilers/mesh_reconciler.h"

#include <algorithm>

#include "lib/base/log.h"
#include "operator/kube/api_status.h"
#include "operator/kube/conditions.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {
namespace {

std::vector<std::string> FinalizersOf(const nlohmann::json& object) {
  std::vector<std::string> out;
  const nlohmann::json& finalizers = Field(Field(object, "metadata"), "finalizers");
  if (!finalizers.is_array()) return out;
  for (const nlohmann::json& f : finalizers) {
    if (f.is_string()) out.push_back(f.get<std::string>());
  }
  return out;
}

// A JSON patch that replaces metadata.finalizers only if the object did not change since it was
// read (the test on resourceVersion), so that other controllers' finalizers are never lost.
nlohmann::json FinalizersPatch(const nlohmann::json& object,
                               const std::vector<std::string>& finalizers) {
  return nlohmann::json::array(
      {{{"op", "test"},
        {"path", "/metadata/resourceVersion"},
        {"value", kube::MetadataString(object, "resourceVersion")}},
       {{"op", "add"}, {"path", "/metadata/finalizers"}, {"value", finalizers}}});
}

// The object as JSON text (which is YAML) for the manifest parser; invalid UTF-8 is replaced
// rather than thrown about.
std::string JsonText(const nlohmann::json& object) {
  return object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

kube::Informer::Handlers MeshReconciler::Handlers() {
  kube::Informer::Handlers h;
  h.on_upsert = [this](const nlohmann::json&) { Reconcile(); };
  h.on_delete = [this](const nlohmann::json&) { Reconcile(); };
  h.on_synced = [this] { Reconcile(); };
  return h;
}

absl::StatusOr<MeshSpec> MeshReconciler::Resolve(const nlohmann::json& object,
                                                 std::string* reason) {
  const std::string name = ObjectName(object);
  std::vector<MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  // The same parser and checks as the standalone manifests (JSON is YAML).
  absl::Status parsed = ParseManifestText(JsonText(object), "Mesh " + name, &meshes, &secrets);
  if (!parsed.ok() || meshes.size() != 1) {
    *reason = "InvalidSpec";
    return parsed.ok() ? absl::InvalidArgumentError("not a Mesh") : parsed;
  }
  MeshSpec mesh = std::move(meshes[0]);
  const SecretRef& ref = mesh.join_token_ref;
  const std::string secret_name = ref.namespace_name + "/" + ref.name;
  absl::StatusOr<nlohmann::json> secret = client_->Get(kube::kSecrets, ref.namespace_name, ref.name);
  if (!secret.ok()) {
    if (absl::IsNotFound(secret.status())) {
      *reason = "SecretNotFound";
      return absl::FailedPreconditionError(
          "Secret " + secret_name + " (spec.joinTokenSecretRef) does not exist: create it with "
          "key \"" + ref.key + "\" holding a token of at least 16 characters");
    }
    if (secret.status().code() == absl::StatusCode::kPermissionDenied) {
      *reason = "SecretForbidden";
      return absl::FailedPreconditionError(
          "the operator may not read Secret " + secret_name + ": grant its ServiceAccount get on "
          "that Secret (with the chart: the value rbac.extraJoinTokenSecrets), or point "
          "spec.joinTokenSecretRef at the Secret it may read");
    }
    *reason = "SecretUnavailable";
    return absl::UnavailableError("reading Secret " + secret_name + ": " +
                                  std::string(secret.status().message()));
  }
  nlohmann::json secret_object = *secret;
  secret_object["kind"] = "Secret";
  if (absl::Status s = ParseManifestText(JsonText(secret_object), "Secret " + secret_name, &meshes,
                                         &secrets);
      !s.ok()) {
    *reason = "InvalidSecret";
    return s;
  }
  if (absl::Status s = SetJoinToken(&mesh, secrets[secret_name]); !s.ok()) {
    *reason = "TokenMissing";
    return s;
  }
  mesh.source = "Mesh " + name;
  return mesh;
}

void MeshReconciler::EnsureFinalizer(const nlohmann::json& object) {
  std::vector<std::string> finalizers = FinalizersOf(object);
  for (const std::string& f : finalizers) {
    if (f == kMeshFinalizer) return;
  }
  finalizers.push_back(kMeshFinalizer);
  absl::StatusOr<nlohmann::json> patched = client_->Patch(
      kube::kMeshes, "", ObjectName(object), FinalizersPatch(object, finalizers), kube::PatchType::kJson);
  if (!patched.ok() && !kube::IsConflict(patched.status()) &&
      patched.status().code() != absl::StatusCode::kInvalidArgument) {
    TM_LOG_WARN("adding the finalizer to Mesh {}: {}", ObjectName(object),
                std::string(patched.status().message()));
  }
}

void MeshReconciler::Finalize(const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  std::vector<std::string> finalizers = FinalizersOf(object);
  if (std::find(finalizers.begin(), finalizers.end(), kMeshFinalizer) == finalizers.end()) return;
  for (const PublicKey& key : coordinator_->MembersOf(name)) {
    if (absl::Status s = coordinator_->Leave(key); !s.ok()) {
      TM_LOG_WARN("removing a member of deleted Mesh {}: {}", name, std::string(s.message()));
      return;  // Retried at the next reconcile.
    }
  }
  finalizers.erase(std::remove(finalizers.begin(), finalizers.end(), kMeshFinalizer),
                   finalizers.end());
  absl::StatusOr<nlohmann::json> patched = client_->Patch(
      kube::kMeshes, "", name, FinalizersPatch(object, finalizers), kube::PatchType::kJson);
  if (patched.ok()) {
    TM_LOG_INFO("Mesh {} deleted: its members were removed", name);
  } else if (!absl::IsNotFound(patched.status())) {
    TM_LOG_WARN("removing the finalizer of Mesh {}: {}", name,
                std::string(patched.status().message()));
  }
}

void MeshReconciler::Reconcile() {
  if (informer_ == nullptr) return;
  std::lock_guard<std::mutex> serial(reconcile_mu_);
  std::vector<nlohmann::json> objects = informer_->Snapshot();
  std::map<std::string, MeshSpec> next;
  std::map<std::string, Problem> problems;
  for (const nlohmann::json& object : objects) {
    const std::string name = ObjectName(object);
    if (BeingDeleted(object)) {
      Finalize(object);
      continue;
    }
    EnsureFinalizer(object);
    std::string reason;
    absl::StatusOr<MeshSpec> mesh = Resolve(object, &reason);
    if (mesh.ok()) {
      next.emplace(name, *std::move(mesh));
      continue;
    }
    problems[name] = {reason, std::string(mesh.status().message())};
    std::lock_guard<std::mutex> lock(mu_);
    auto previous = applied_.find(name);
    if (previous != applied_.end()) {
      next.emplace(name, previous->second);  // Keep serving it as it was.
      problems[name].message += " (members keep the last valid settings)";
    }
  }
  bool changed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, problem] : problems) {
      auto old = problems_.find(name);
      if (old == problems_.end() || old->second.message != problem.message) {
        TM_LOG_WARN("Mesh {}: {}", name, problem.message);
        for (const nlohmann::json& object : objects) {
          if (ObjectName(object) == name) events_->Warning(object, problem.reason, problem.message);
        }
      }
    }
    problems_ = std::move(problems);
    changed = next != applied_;
    if (changed) applied_ = next;
  }
  if (!changed) return;
  std::vector<MeshSpec> meshes;
  for (const auto& [name, mesh] : next) meshes.push_back(mesh);
  coordinator_->SetMeshes(std::move(meshes));
  TM_LOG_INFO("meshes applied: {}", next.size());
  if (options_.on_meshes_changed) options_.on_meshes_changed();
}

void MeshReconciler::WriteStatus() {
  if (informer_ == nullptr || !informer_->HasSynced()) return;
  for (const nlohmann::json& object : informer_->Snapshot()) {
    const std::string name = ObjectName(object);
    if (BeingDeleted(object)) continue;
    nlohmann::json status = ObjectStatus(object);
    const size_t members = coordinator_->MembersOf(name).size();
    status["memberCount"] = members;
    status["coordinatorEndpoints"] = options_.coordinator_endpoints;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto problem = problems_.find(name);
      if (problem != problems_.end()) {
        kube::SetCondition(&status, "Ready", false, problem->second.reason,
                           problem->second.message, ObjectGeneration(object));
      } else if (applied_.count(name)) {
        kube::SetCondition(&status, "Ready", true, "Serving",
                           "The coordinator serves this mesh to " + std::to_string(members) +
                               " member(s).",
                           ObjectGeneration(object));
      } else {
        continue;  // Not reconciled yet.
      }
    }
    status_.Write(object, status);
  }
}

size_t MeshReconciler::mesh_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return applied_.size();
}

}  // namespace tunnelmesh
