// PodAttacher: the agent's side of tunnelmesh-cni (node-agent/cni/attach_protocol.h). It answers
// the plugin's ADD, DEL, CHECK, GC and STATUS, asks the coordinator to admit or remove each pod
// (AttachPod, DetachPod), keeps the attachments in a PodAttachmentStore, states them to the
// coordinator after every registration (SyncPods), and detaches attachments whose host interface
// vanished.
//
// Threads: one thread owns it (the agent's "pods" loop, node-agent/agent/agent.h): every method
// but attachments() runs there, one at a time, so an ADD, a DEL, a sync and a collection never
// interleave, and the coordinator RPCs they make block neither the control loop nor the watch.
// attachments() is a snapshot readable from any thread (the control loop's `status`).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/base/snapshot.h"
#include "node-agent/agent/pod_attachments.h"
#include "node-agent/cni/attach_protocol.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

// The coordinator's pod RPCs, made with this member's session (CoordinatorSession; a fake in
// tests). Each blocks for one RPC.
class PodCoordinator {
 public:
  virtual ~PodCoordinator() = default;
  [[nodiscard]] virtual absl::StatusOr<coord::AttachPodResponse> AttachPod(
      const coord::AttachPodRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<coord::DetachPodResponse> DetachPod(
      const coord::DetachPodRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<coord::SyncPodsResponse> SyncPods(
      const coord::SyncPodsRequest& request) = 0;
};

// What a request needs from the agent's control state (copied there, on the control loop).
struct PodRequestContext {
  std::string interface_name;
  std::string mesh;
  bool connected = false;           // The watch stream to the coordinator is up.
  std::string disconnected_why;     // Why not, when not.
  uint32_t mtu = 0;                 // The mesh interface's MTU: the pod interface's.
  std::vector<std::string> routes;  // The mesh's ranges.
};

// An attachment younger than this is not collected for a missing host interface: the plugin
// makes the veth after the agent answered ADD.
inline constexpr absl::Duration kPodInterfaceGrace = absl::Seconds(60);

class PodAttacher {
 public:
  using InterfaceExists = std::function<bool(const std::string& name)>;

  // `coordinator` must outlive the attacher. `interface_exists` tells whether a host interface is
  // there (if_nametoindex in the agent). `grace`: how young an attachment without its interface
  // is left alone.
  PodAttacher(PodAttachmentStore store, PodCoordinator* coordinator,
              InterfaceExists interface_exists, absl::Duration grace = kPodInterfaceGrace);

  // One request from the plugin; the response it gets (errors carry CNI codes).
  cni::AttachResponse Handle(const cni::AttachRequest& request, const PodRequestContext& context,
                             absl::Time now);

  // After every registration: states the recorded pods to the coordinator (SyncPods). Pods it no
  // longer admits are forgotten (logged with its reason); detaching records are dropped (not
  // listed, so the coordinator detached them). A failure is logged and retried by Collect.
  void Sync();
  // Every 30 s and at start: detaches attachments whose host interface vanished, retries the
  // detaches the coordinator did not confirm, and a failed sync.
  void Collect(absl::Time now);

  // The attachments as last changed (detaching ones included). Any thread.
  std::shared_ptr<const std::vector<PodAttachment>> attachments() const { return snapshot_.Load(); }

 private:
  cni::AttachResponse Add(const cni::AttachRequest& request, const PodRequestContext& context,
                          absl::Time now);
  // Detaches one recorded pod: asks the coordinator, then forgets it, or keeps it as detaching
  // when the coordinator did not answer. `why` goes into the log.
  void Detach(const PodAttachmentKey& key, const std::string& why);
  // ADD's (and CHECK's) answer for a recorded attachment.
  cni::AttachResponse Answer(const PodAttachment& attachment,
                             const PodRequestContext& context) const;
  void Publish();

  PodAttachmentStore store_;
  PodCoordinator* const coordinator_;
  const InterfaceExists interface_exists_;
  const absl::Duration grace_;
  bool sync_needed_ = false;
  Snapshot<std::vector<PodAttachment>> snapshot_{
      std::make_shared<const std::vector<PodAttachment>>()};
};

}  // namespace tunnelmesh
