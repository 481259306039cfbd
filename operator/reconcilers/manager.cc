#include "operator/reconcilers/manager.h"

#include <thread>

#include "operator/reconcilers/pod_lookup.h"

namespace tunnelmesh {
namespace {

Coordinator::Options WithClusterChecks(Coordinator::Options options, kube::Api* api,
                                       const kube::Informer* nodes) {
  options.node_exists = [nodes](const std::string& name) {
    return nodes->Find("", name).has_value();
  };
  options.lookup_pod = PodLookup(api);
  return options;
}

MeshReconciler::Options WithMeshHook(MeshReconciler::Options options, const kube::Informer* peers,
                                     kube::WorkQueue* peer_queue, const kube::Informer* policies,
                                     kube::WorkQueue* policy_queue) {
  // MeshPeers and PeerPolicies that named a Mesh which did not exist yet are looked at again; the
  // caller's hook (the CoreDNS configuration follows the meshes' domains) runs too.
  options.on_meshes_changed = [=, also = std::move(options.on_meshes_changed)] {
    EnqueueAll(*peers, peer_queue);
    EnqueueAll(*policies, policy_queue);
    if (also) also();
  };
  return options;
}

}  // namespace

Manager::Manager(kube::Api* api, kube::EventRecorder* events, MemberStore* store, Options options)
    : mesh_queue_(options.queue),
      peer_queue_(options.queue),
      policy_queue_(options.queue),
      node_queue_(options.queue),
      mesh_informer_(api, kube::kMeshes, EnqueueHandlers(&mesh_queue_), options.watch),
      peer_informer_(api, kube::kMeshPeers,
                     EnqueueHandlers(&peer_queue_, [this] { return peers_.MemberNames(); }),
                     options.watch),
      policy_informer_(api, kube::kPeerPolicies, EnqueueHandlers(&policy_queue_), options.watch),
      node_informer_(api, kube::kNodes,
                     EnqueueHandlers(&node_queue_, [this] { return nodes_.NodeNames(); }),
                     options.watch),
      coordinator_(store, WithClusterChecks(options.coordinator, api, &node_informer_)),
      peers_(api, events, &coordinator_, &peer_informer_, options.peer),
      meshes_(api, events, &coordinator_, &mesh_informer_,
              WithMeshHook(options.mesh, &peer_informer_, &peer_queue_, &policy_informer_,
                           &policy_queue_)),
      policies_(api, events, &coordinator_, &policy_informer_, &mesh_informer_),
      nodes_(api, &coordinator_, &node_informer_),
      mesh_controller_("Mesh", &mesh_queue_, &meshes_),
      peer_controller_("MeshPeer", &peer_queue_, &peers_),
      policy_controller_("PeerPolicy", &policy_queue_, &policies_),
      node_controller_("Node", &node_queue_, &nodes_) {}

Manager::~Manager() { Stop(); }

bool Manager::Start(const std::atomic<bool>& stop) {
  // Each kind's keys are reconciled once its cache holds the kinds it depends on.
  const std::pair<kube::Informer*, Controller*> order[] = {{&mesh_informer_, &mesh_controller_},
                                                           {&peer_informer_, &peer_controller_},
                                                           {&node_informer_, &node_controller_}};
  for (const auto& [informer, controller] : order) {
    informer->Start();
    while (!informer->HasSynced()) {
      if (stop) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // The first list's keys are queued: reconcile them here, before the next kind (and the
    // members that register once the caller serves) needs them, then hand over to the worker.
    controller->RunUntilIdle();
    controller->Start();
  }
  policy_informer_.Start();
  policy_controller_.Start();
  return true;
}

void Manager::Stop() {
  for (Controller* c :
       {&policy_controller_, &node_controller_, &peer_controller_, &mesh_controller_}) {
    c->Stop();
  }
  for (kube::Informer* i : {&policy_informer_, &node_informer_, &peer_informer_, &mesh_informer_}) {
    i->Stop();
  }
}

}  // namespace tunnelmesh
