// PeerPolicy reconciler: validates every PeerPolicy (beyond the CRD schema: selector operators and
// values, port ranges, ipBlocks, the Mesh it names) and hands the valid ones to the coordinator,
// which compiles them into per-member packet-filter rules. Level-triggered (controller.h): a
// reconcile of any key recomputes the accepted set from the cache (the coordinator takes the whole
// set and recompiles only what changed) and writes the status of that key:
//   - Ready: True/Accepted, or False with the reason (InvalidSpec, MeshNotFound) and the field;
//   - Compiled: True/Compiled once the coordinator compiled it (False/Pending while the coordinator
//     does not serve its Mesh yet, False with Ready's reason when it is invalid);
//   - SelectsNothing: True (NoSources, NoDestinations) when a side selects no member and holds no
//     ipBlock (the policy then has no effect), else False/Selected;
//   - selectedSources, selectedDestinations, compiledRules (kubectl get peerpolicies shows them).
// Members joining and leaving change the counts without a PeerPolicy event, so a valid policy is
// reconciled again after kResync; the status writer writes only what changed.
// A rejected policy also gets a Warning Event.
//
// Thread-compatible: called on its controller's worker only.
#pragma once

#include <map>
#include <string>

#include "nlohmann/json.hpp"
#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/controller.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

class PolicyReconciler final : public Reconciler {
 public:
  // How often a valid policy's counts are refreshed without an event.
  static constexpr absl::Duration kResync = absl::Seconds(30);
  // How soon to look again when the coordinator does not serve the policy's Mesh yet.
  static constexpr absl::Duration kPendingRetry = absl::Seconds(1);

  // Everything must outlive the reconciler.
  PolicyReconciler(kube::Api* api, kube::EventRecorder* events, Coordinator* coordinator,
                   const kube::Informer* policies, const kube::Informer* meshes)
      : status_(api, kube::kPeerPolicies),
        events_(events),
        coordinator_(coordinator),
        policies_(policies),
        meshes_(meshes) {}

  [[nodiscard]] absl::StatusOr<Result> Reconcile(const std::string& name) override;

 private:
  struct Verdict {
    bool ok = false;
    std::string reason;
    std::string message;
  };

  StatusWriter status_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const kube::Informer* const policies_;
  const kube::Informer* const meshes_;
  std::map<std::string, std::string> rejected_;  // name -> message last warned about
};

}  // namespace tunnelmesh
