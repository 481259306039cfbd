#include "operator/reconcilers/mesh_reconciler.h"

#include <algorithm>

#include "lib/base/log.h"
#include "operator/kube/conditions.h"
#include "operator/kube/object.h"

namespace tunnelmesh {
namespace {

using kube::BeingDeleted;
using kube::Field;
using kube::ObjectGeneration;
using kube::ObjectName;
using kube::ObjectStatus;

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

MeshReconciler::MeshReconciler(kube::Api* api, kube::EventRecorder* events,
                               Coordinator* coordinator, const kube::Informer* meshes,
                               Options options)
    : api_(api),
      events_(events),
      coordinator_(coordinator),
      meshes_(meshes),
      options_(std::move(options)),
      status_(api, kube::kMeshes) {}

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
  absl::StatusOr<nlohmann::json> secret = api_->Get(kube::kSecrets, ref.namespace_name, ref.name);
  if (!secret.ok()) {
    if (absl::IsNotFound(secret.status())) {
      *reason = "SecretNotFound";
      return absl::FailedPreconditionError(
          "Secret " + secret_name +
          " (spec.joinTokenSecretRef) does not exist: create it with "
          "key \"" +
          ref.key + "\" holding a token of at least 16 characters");
    }
    if (secret.status().code() == absl::StatusCode::kPermissionDenied) {
      *reason = "SecretForbidden";
      return absl::FailedPreconditionError(
          "the operator may not read Secret " + secret_name +
          ": grant its ServiceAccount get on "
          "that Secret (with the chart: the value rbac.extraJoinTokenSecrets), or point "
          "spec.joinTokenSecretRef at the Secret it may read");
    }
    *reason = "SecretUnavailable";
    return absl::UnavailableError("reading Secret " + secret_name + ": " +
                                  std::string(secret.status().message()));
  }
  nlohmann::json secret_object = *secret;
  secret_object["kind"] = "Secret";
  if (absl::Status s =
          ParseManifestText(JsonText(secret_object), "Secret " + secret_name, &meshes, &secrets);
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
  absl::StatusOr<nlohmann::json> patched =
      api_->Patch(kube::kMeshes, "", ObjectName(object), FinalizersPatch(object, finalizers),
                  kube::PatchType::kJson);
  if (!patched.ok() && !kube::IsConflict(patched.status()) &&
      patched.status().code() != absl::StatusCode::kInvalidArgument) {
    TM_LOG_WARN("adding the finalizer to Mesh {}: {}", ObjectName(object),
                std::string(patched.status().message()));
  }
}

absl::Status MeshReconciler::Finalize(const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  std::vector<std::string> finalizers = FinalizersOf(object);
  if (std::find(finalizers.begin(), finalizers.end(), kMeshFinalizer) == finalizers.end()) {
    return absl::OkStatus();
  }
  for (const PublicKey& key : coordinator_->MembersOf(name)) {
    if (absl::Status s = coordinator_->Leave(key); !s.ok()) {
      return absl::Status(
          s.code(), "removing a member of deleted Mesh " + name + ": " + std::string(s.message()));
    }
  }
  // The members' MeshPeers are deleted by the coordinator's store writer: the finalizer stays
  // until those deletes are done (or the next reconcile tries again).
  if (!coordinator_->FlushStore(absl::Seconds(10))) {
    return absl::UnavailableError("deleting the MeshPeers of Mesh " + name + " takes long");
  }
  absl::Status removed = RemoveMeshFinalizer(api_, object);
  if (removed.ok()) {
    TM_LOG_INFO("Mesh {} deleted: its members were removed", name);
  } else if (!absl::IsNotFound(removed)) {
    return removed;
  }
  return absl::OkStatus();
}

absl::Status RemoveMeshFinalizer(kube::Api* api, const nlohmann::json& mesh) {
  const std::string name = ObjectName(mesh);
  std::vector<std::string> finalizers = FinalizersOf(mesh);
  finalizers.erase(std::remove(finalizers.begin(), finalizers.end(), kMeshFinalizer),
                   finalizers.end());
  absl::StatusOr<nlohmann::json> patched = api->Patch(
      kube::kMeshes, "", name, FinalizersPatch(mesh, finalizers), kube::PatchType::kJson);
  if (patched.ok()) return absl::OkStatus();
  return absl::Status(patched.status().code(), "removing the finalizer of Mesh " + name + ": " +
                                                   std::string(patched.status().message()));
}

void MeshReconciler::Apply(const std::string& name, const MeshSpec* spec) {
  std::vector<MeshSpec> meshes;
  {
    absl::MutexLock lock(&mu_);
    auto it = applied_.find(name);
    if (spec == nullptr) {
      if (it == applied_.end()) return;
      applied_.erase(it);
    } else {
      if (it != applied_.end() && it->second == *spec) return;
      applied_[name] = *spec;
    }
    for (const auto& [n, mesh] : applied_) meshes.push_back(mesh);
  }
  const size_t count = meshes.size();
  coordinator_->SetMeshes(std::move(meshes));
  TM_LOG_INFO("meshes applied: {}", count);
  if (options_.on_meshes_changed) options_.on_meshes_changed();
}

absl::StatusOr<Result> MeshReconciler::Reconcile(const std::string& name) {
  std::optional<nlohmann::json> object = meshes_->Find("", name);
  if (!object) {
    problems_.erase(name);
    status_.Forget(name);
    Apply(name, nullptr);
    return Result{};
  }
  if (BeingDeleted(*object)) {
    Apply(name, nullptr);
    if (absl::Status s = Finalize(*object); !s.ok()) return s;
    return Result{};
  }
  EnsureFinalizer(*object);
  std::string reason;
  absl::StatusOr<MeshSpec> mesh = Resolve(*object, &reason);
  if (mesh.ok()) {
    problems_.erase(name);
    Apply(name, &*mesh);
  } else {
    Problem problem{reason, std::string(mesh.status().message())};
    bool serving;
    {
      absl::MutexLock lock(&mu_);
      serving = applied_.contains(name);
    }
    if (serving) problem.message += " (members keep the last valid settings)";
    auto old = problems_.find(name);
    if (old == problems_.end() || old->second.message != problem.message) {
      TM_LOG_WARN("Mesh {}: {}", name, problem.message);
      events_->Warning(*object, problem.reason, problem.message);
    }
    problems_[name] = std::move(problem);
  }
  WriteStatus(*object);
  return Result{options_.resync_period};
}

void MeshReconciler::WriteStatus(const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  nlohmann::json status = ObjectStatus(object);
  const size_t members = coordinator_->MembersOf(name).size();
  status["memberCount"] = members;
  status["coordinatorEndpoints"] = options_.coordinator_endpoints;
  auto problem = problems_.find(name);
  if (problem != problems_.end()) {
    kube::SetCondition(&status, "Ready", false, problem->second.reason, problem->second.message,
                       ObjectGeneration(object));
  } else {
    kube::SetCondition(
        &status, "Ready", true, "Serving",
        "The coordinator serves this mesh to " + std::to_string(members) + " member(s).",
        ObjectGeneration(object));
  }
  status_.Write(object, status);
}

size_t MeshReconciler::mesh_count() const {
  absl::MutexLock lock(&mu_);
  return applied_.size();
}

}  // namespace tunnelmesh
