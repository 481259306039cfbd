// Mesh reconciler: turns each Mesh object (and the Secret holding its join token) into one of the
// coordinator's meshes, one object (key = its name) at a time, level-triggered (controller.h).
// A Mesh that cannot be used (its Secret is missing or unreadable, its token too short, a bad
// CIDR) keeps its last valid settings if it had any, and its Ready condition and a Warning Event
// say what to fix. A finalizer lets the operator remove a deleted Mesh's members (and their
// MeshPeers) before the object goes. Each key is looked at again every Options::resync_period:
// the Secret is re-read (token rotation) and the status (member count) refreshed.
//
// Thread-compatible: Reconcile runs on its controller's worker only; mesh_count() is thread-safe.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "operator/api/mesh.h"
#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/controller.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

inline constexpr char kMeshFinalizer[] = "tunnelmesh.io/members";

// Removes kMeshFinalizer from `mesh` (as read, with its resourceVersion: a changed object is
// kAborted) and keeps other finalizers.
[[nodiscard]] absl::Status RemoveMeshFinalizer(kube::Api* api, const nlohmann::json& mesh);

class MeshReconciler final : public Reconciler {
 public:
  struct Options {
    // Shown in status.coordinatorEndpoints ("host:port"); may be empty.
    std::vector<std::string> coordinator_endpoints;
    // Called after the coordinator's meshes changed (MeshPeers and PeerPolicies that name a Mesh
    // are looked at again). On the worker thread; must not block.
    std::function<void()> on_meshes_changed;
    absl::Duration resync_period = absl::Seconds(2);
  };
  // Everything must outlive the reconciler; `meshes` is the Mesh informer.
  MeshReconciler(kube::Api* api, kube::EventRecorder* events, Coordinator* coordinator,
                 const kube::Informer* meshes, Options options);

  [[nodiscard]] absl::StatusOr<Result> Reconcile(const std::string& name) override;
  size_t mesh_count() const;

 private:
  struct Problem {
    std::string reason;
    std::string message;
  };
  // Parses the object and resolves its token; errors are user-facing.
  absl::StatusOr<MeshSpec> Resolve(const nlohmann::json& object, std::string* reason);
  // Removes a deleted Mesh's members, then its finalizer.
  absl::Status Finalize(const nlohmann::json& object);
  void EnsureFinalizer(const nlohmann::json& object);
  // Hands the applied set to the coordinator when `name`'s entry changed.
  void Apply(const std::string& name, const MeshSpec* spec);
  void WriteStatus(const nlohmann::json& object);

  kube::Api* const api_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const kube::Informer* const meshes_;
  const Options options_;
  StatusWriter status_;
  std::map<std::string, Problem> problems_;  // worker only: meshes that cannot be (fully) applied
  mutable absl::Mutex mu_;
  std::map<std::string, MeshSpec> applied_ ABSL_GUARDED_BY(mu_);  // what the coordinator serves
};

}  // namespace tunnelmesh
