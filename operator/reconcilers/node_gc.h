// Garbage collection of Node members, as a reconciler of Node keys (controller.h): when a Node is
// gone (absent from the cache and, asked directly, from the API server), the members labelled with
// it (tunnelmesh.io/node, the agent that ran there) leave every map and their MeshPeers are
// removed. After every Node list the nodes that members name are looked at too, which catches
// Nodes deleted while the operator was away. (ownerReferences would need the cluster's garbage
// collector; this works with the API server alone and acts at once.)
//
// Thread-compatible: Reconcile runs on its controller's worker only; NodeNames() is thread-safe.
#pragma once

#include <string>
#include <vector>

#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/controller.h"

namespace tunnelmesh {

class NodeGarbageCollector final : public Reconciler {
 public:
  // Everything must outlive the collector; `nodes` is the Node informer.
  NodeGarbageCollector(kube::Api* api, Coordinator* coordinator, const kube::Informer* nodes)
      : api_(api), coordinator_(coordinator), nodes_(nodes) {}

  [[nodiscard]] absl::StatusOr<Result> Reconcile(const std::string& node) override;
  // The Node names members carry (keys to look at after a list).
  std::vector<std::string> NodeNames() const;

 private:
  kube::Api* const api_;
  Coordinator* const coordinator_;
  const kube::Informer* const nodes_;
};

}  // namespace tunnelmesh
