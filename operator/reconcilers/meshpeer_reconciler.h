// MeshPeer reconciler: keeps the coordinator in line with the MeshPeer objects and writes their
// status. An object created or edited by anyone (an admin pre-creating a member with a public key,
// a label edit, the objects found at startup) is admitted into the coordinator, which allocates
// missing addresses; a deleted object evicts its member from every map within the informer's
// latency. Status (mesh IPs, endpoints, last seen, a Ready condition that says what is wrong) is
// written by WriteStatus, only when it changed.
//
// Thread-safe: informer handlers and the operator's periodic tick call in concurrently.
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

class MeshPeerReconciler {
 public:
  MeshPeerReconciler(kube::Client* client, kube::EventRecorder* events, Coordinator* coordinator)
      : status_(client, kube::kMeshPeers), events_(events), coordinator_(coordinator) {}

  kube::Informer::Handlers Handlers();
  // Re-admits every cached object, after the set of meshes changed. Needs set_informer.
  void ResyncAll();
  // Writes the status of every MeshPeer whose status is out of date.
  void WriteStatus();
  void set_informer(const kube::Informer* informer) { informer_ = informer; }

 private:
  void OnUpsert(const nlohmann::json& object);
  void OnDelete(const nlohmann::json& object);
  nlohmann::json DesiredStatus(const nlohmann::json& object,
                               const std::map<PublicKey, MemberStatus>& members);

  StatusWriter status_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const kube::Informer* informer_ = nullptr;
  std::mutex mu_;
  // Objects that cannot be admitted: name -> {reason, message}.
  std::map<std::string, std::pair<std::string, std::string>> problems_;
};

}  // namespace tunnelmesh
