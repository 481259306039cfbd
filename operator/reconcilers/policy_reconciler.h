// PeerPolicy reconciler: validates every PeerPolicy (beyond the CRD schema: selector operators and
// values, port ranges, the Mesh it names) and hands the valid ones to the coordinator, which keeps
// them for the packet filter's compiler. Each object's Ready condition says whether it was accepted
// and, if not, which field to fix; a rejected policy also gets a Warning Event.
//
// Thread-safe: the informer's handlers and the operator's tick call in concurrently.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "nlohmann/json.hpp"
#include "operator/coordinator/coordinator.h"
#include "operator/kube/client.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

class PolicyReconciler {
 public:
  PolicyReconciler(kube::Client* client, kube::EventRecorder* events, Coordinator* coordinator,
                   const kube::Informer* meshes)
      : status_(client, kube::kPeerPolicies),
        events_(events),
        coordinator_(coordinator),
        meshes_(meshes) {}

  kube::Informer::Handlers Handlers();
  void set_informer(const kube::Informer* informer) { informer_ = informer; }
  void Reconcile();
  void WriteStatus();

 private:
  struct Verdict {
    bool ok = false;
    std::string reason;
    std::string message;
  };

  StatusWriter status_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const kube::Informer* const meshes_;
  const kube::Informer* informer_ = nullptr;
  std::mutex mu_;
  std::map<std::string, Verdict> verdicts_;
};

}  // namespace tunnelmesh
