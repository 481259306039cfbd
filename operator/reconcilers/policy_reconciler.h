// PeerPolicy reconciler: validates every PeerPolicy (beyond the CRD schema: selector operators and
// values, port ranges, the Mesh it names) and hands the valid ones to the coordinator, which keeps
// them for the packet filter's compiler. Level-triggered (controller.h): a reconcile of any key
// recomputes the accepted set from the cache (the coordinator takes the whole set) and writes the
// status of that key. Each object's Ready condition says whether it was accepted and, if not,
// which field to fix; a rejected policy also gets a Warning Event.
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
