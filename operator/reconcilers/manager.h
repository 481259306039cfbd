// The operator's Kubernetes side, wired: one informer, work queue, reconciler and controller per
// kind (Mesh, MeshPeer, PeerPolicy, Node), and the Coordinator they drive. The loop it closes:
// Coordinator -> member store (MeshPeers) -> API server -> MeshPeer informer -> MeshPeer
// reconciler -> Coordinator::Admit / Evict -> store Observe. The API server is the database.
//
// Construction order is dependency order (queues, informers, coordinator, reconcilers,
// controllers), so nothing is bound late. Start() brings up Meshes, then MeshPeers, then Nodes
// (members need their Mesh, Node members their Node), each synced before the next, then
// PeerPolicies; the caller starts serving afterwards.
//
// Threads: each informer and each controller runs one thread; Start/Stop from one thread.
#pragma once

#include <atomic>
#include <memory>

#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/kube/work_queue.h"
#include "operator/reconcilers/controller.h"
#include "operator/reconcilers/mesh_reconciler.h"
#include "operator/reconcilers/meshpeer_reconciler.h"
#include "operator/reconcilers/node_gc.h"
#include "operator/reconcilers/policy_reconciler.h"

namespace tunnelmesh {

class Manager {
 public:
  struct Options {
    // node_exists and lookup_pod are the manager's (Node members need a Node; pods are read).
    Coordinator::Options coordinator;
    MeshReconciler::Options mesh;  // on_meshes_changed: called after the manager's own
    MeshPeerReconciler::Options peer;
    kube::Informer::Options watch;
    kube::WorkQueue::Options queue;
  };
  // `api`, `events` and `store` must outlive the manager.
  Manager(kube::Api* api, kube::EventRecorder* events, MemberStore* store, Options options);
  ~Manager();  // Stop()
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Starts informers and controllers; true once Meshes, MeshPeers and Nodes are synced, false
  // when `stop` became true first.
  bool Start(const std::atomic<bool>& stop);
  void Stop();

  Coordinator& coordinator() { return coordinator_; }
  size_t mesh_count() const { return meshes_.mesh_count(); }
  // The controllers (Mesh, MeshPeer, PeerPolicy, Node), for their reconcile metrics.
  std::vector<const Controller*> controllers() const {
    return {&mesh_controller_, &peer_controller_, &policy_controller_, &node_controller_};
  }
  // The Mesh informer's cache (for components that record Events on Meshes).
  const kube::Informer& mesh_informer() const { return mesh_informer_; }

 private:
  kube::WorkQueue mesh_queue_, peer_queue_, policy_queue_, node_queue_;
  kube::Informer mesh_informer_, peer_informer_, policy_informer_, node_informer_;
  Coordinator coordinator_;
  MeshPeerReconciler peers_;
  MeshReconciler meshes_;
  PolicyReconciler policies_;
  NodeGarbageCollector nodes_;
  Controller mesh_controller_, peer_controller_, policy_controller_, node_controller_;
};

}  // namespace tunnelmesh
