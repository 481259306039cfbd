// Mesh reconciler: turns the Mesh objects (and the Secrets holding their join tokens) into the
// coordinator's meshes, level-triggered: every change, and a periodic resync that notices rotated
// tokens, rebuilds the whole set from the informer's cache. A Mesh that cannot be used (its Secret
// is missing or unreadable, its token too short) keeps its last valid settings if it had any, and
// its Ready condition and a Warning Event say what to fix. A finalizer lets the operator remove a
// deleted Mesh's members (and their MeshPeers) before the object goes.
//
// Thread-safe: informer handlers and the operator's periodic tick call in concurrently.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/manifests.h"
#include "operator/kube/client.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

inline constexpr char kMeshFinalizer[] = "tunnelmesh.io/members";

class MeshReconciler {
 public:
  struct Options {
    // Shown in status.coordinatorEndpoints ("host:port"); may be empty.
    std::vector<std::string> coordinator_endpoints;
    // Called after the coordinator's meshes changed (MeshPeers waiting for a Mesh are retried).
    std::function<void()> on_meshes_changed;
  };
  MeshReconciler(kube::Client* client, kube::EventRecorder* events, Coordinator* coordinator,
                 Options options)
      : client_(client),
        events_(events),
        coordinator_(coordinator),
        options_(std::move(options)),
        status_(client, kube::kMeshes) {}

  kube::Informer::Handlers Handlers();
  void set_informer(const kube::Informer* informer) { informer_ = informer; }
  // Rebuilds the coordinator's meshes from the cache (re-reading the Secrets).
  void Reconcile();
  // Writes status (member count, endpoints, Ready) where it changed.
  void WriteStatus();
  size_t mesh_count() const;

 private:
  struct Problem {
    std::string reason;
    std::string message;
  };
  // Parses the object and resolves its token; errors are user-facing.
  absl::StatusOr<MeshSpec> Resolve(const nlohmann::json& object, std::string* reason);
  // Removes a deleted Mesh's members, then its finalizer.
  void Finalize(const nlohmann::json& object);
  void EnsureFinalizer(const nlohmann::json& object);

  kube::Client* const client_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const Options options_;
  StatusWriter status_;
  const kube::Informer* informer_ = nullptr;
  std::mutex reconcile_mu_;  // One Reconcile at a time (informer thread and periodic tick).
  mutable std::mutex mu_;
  std::map<std::string, MeshSpec> applied_;        // What the coordinator serves now.
  std::map<std::string, Problem> problems_;        // Meshes that cannot be (fully) applied.
};

}  // namespace tunnelmesh
