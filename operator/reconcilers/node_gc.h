// Garbage collection of Node members: when a Node object is deleted, the MeshPeer of the agent that
// ran on it (label tunnelmesh.io/node) is removed, and the member leaves every map. A sweep after
// every Node list catches Nodes deleted while the operator was away. (ownerReferences would need
// the cluster's garbage collector; this works with the API server alone and acts at once.)
// Thread-safe.
#pragma once

#include <string>

#include "operator/coordinator/coordinator.h"
#include "operator/kube/informer.h"

namespace tunnelmesh {

class NodeGarbageCollector {
 public:
  explicit NodeGarbageCollector(Coordinator* coordinator) : coordinator_(coordinator) {}

  kube::Informer::Handlers Handlers();
  void set_informer(const kube::Informer* informer) { informer_ = informer; }
  bool NodeExists(const std::string& name) const;

 private:
  // Removes the members of kind Node whose Node is gone (`node` empty: every such member).
  void Collect(const std::string& node);

  Coordinator* const coordinator_;
  const kube::Informer* informer_ = nullptr;
};

}  // namespace tunnelmesh
