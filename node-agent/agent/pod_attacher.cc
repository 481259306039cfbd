#include "node-agent/agent/pod_attacher.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

coord::PodRef PodRefOf(const PodAttachment& a) {
  coord::PodRef ref;
  ref.set_namespace_(a.pod_namespace);
  ref.set_name(a.pod_name);
  ref.set_uid(a.pod_uid);
  return ref;
}

// "pod NAMESPACE/NAME (container 0123456789ab)", for logs and errors.
std::string PodLabel(const PodAttachment& a) {
  return absl::StrCat("pod ", a.pod_namespace, "/", a.pod_name, " (container ",
                      a.container_id.substr(0, 12), ")");
}

// The plugin's error for a failed RPC: "try later" when the coordinator may answer later.
cni::AttachResponse RpcError(const absl::Status& s, const std::string& what) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnauthenticated:  // The session is being renewed.
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return cni::ErrorResponse(cni::kCniErrorTryLater,
                                absl::StrCat(what, ": the coordinator did not answer (",
                                             s.message(), "); the runtime retries the pod"));
    case absl::StatusCode::kUnimplemented:
      return cni::ErrorResponse(cni::kCniErrorAttachFailed,
                                absl::StrCat(what,
                                             ": the coordinator does not support pods (its "
                                             "tunnelmesh-operator is older than this agent): "
                                             "upgrade tunnelmesh-operator"));
    case absl::StatusCode::kResourceExhausted:
      return cni::ErrorResponse(cni::kCniErrorOutOfAddresses,
                                absl::StrCat(what, ": ", s.message()));
    default:
      return cni::ErrorResponse(cni::kCniErrorAttachFailed,
                                absl::StrCat(what, ": the coordinator refused: ", s.message()));
  }
}

}  // namespace

PodAttacher::PodAttacher(PodAttachmentStore store, PodCoordinator* coordinator,
                         InterfaceExists interface_exists, absl::Duration grace)
    : store_(std::move(store)),
      coordinator_(coordinator),
      interface_exists_(std::move(interface_exists)),
      grace_(grace) {
  Publish();
}

void PodAttacher::Publish() {
  auto list = std::make_shared<std::vector<PodAttachment>>();
  for (const auto& [key, a] : store_.records()) list->push_back(a);
  snapshot_.Store(std::move(list));
}

cni::AttachResponse PodAttacher::Answer(const PodAttachment& a,
                                        const PodRequestContext& context) const {
  cni::AttachResponse response;
  response.attached = true;
  response.name = a.name;
  response.host_interface = a.host_interface;
  response.addresses = a.addresses;
  response.routes = context.routes;
  response.mtu = context.mtu;
  return response;
}

cni::AttachResponse PodAttacher::Handle(const cni::AttachRequest& request,
                                        const PodRequestContext& context, absl::Time now) {
  const std::string& command = request.command;
  if (command != "ADD" && command != "DEL" && command != "CHECK" && command != "GC" &&
      command != "STATUS") {
    return cni::ErrorResponse(
        cni::kCniErrorInvalidEnvironment,
        absl::StrCat("unknown command \"", command, "\": ADD, DEL, CHECK, GC or STATUS"));
  }
  // A DEL succeeds whatever it names: an attachment of another mesh is simply not here. Anything
  // else for another mesh is a conflist pointing at the wrong agent (and a GC would detach all of
  // this agent's pods).
  if (command != "DEL" && !request.mesh.empty() && request.mesh != context.mesh) {
    return cni::ErrorResponse(
        cni::kCniErrorMeshUnknown,
        absl::StrCat("the conflist's \"mesh\" is \"", request.mesh, "\", but the agent of ",
                     context.interface_name, " is in mesh \"", context.mesh,
                     "\": set \"mesh\" to \"", context.mesh,
                     "\" or point \"agentSocket\" at that mesh's agent"));
  }
  if (command == "STATUS") {
    if (context.connected) return cni::AttachResponse();
    return cni::ErrorResponse(
        cni::kCniErrorNotAvailable,
        absl::StrCat("the agent of ", context.interface_name,
                     " is not connected to its coordinator",
                     context.disconnected_why.empty() ? "" : " (" + context.disconnected_why + ")",
                     ": pods cannot be attached until it is"));
  }
  if (command == "GC") {
    for (const PodAttachmentKey& key :
         InvalidAttachments(store_.records(), request.valid_attachments)) {
      Detach(key, "the runtime's garbage collection did not list it");
    }
    return cni::AttachResponse();
  }
  if (request.container_id.empty() || request.if_name.empty()) {
    return cni::ErrorResponse(cni::kCniErrorInvalidEnvironment,
                              request.container_id.empty()
                                  ? "\"containerId\" is empty: the runtime sets CNI_CONTAINERID"
                                  : "\"ifName\" is empty: the runtime sets CNI_IFNAME");
  }
  const PodAttachmentKey key{request.container_id, request.if_name};
  const PodAttachment* known = store_.Find(key);
  if (command == "ADD") return Add(request, context, now);
  if (command == "CHECK") {
    if (known != nullptr && !known->detaching) return Answer(*known, context);
    cni::AttachResponse response;
    response.reason =
        absl::StrCat("the agent of ", context.interface_name, " has no attachment of container ",
                     request.container_id, " interface ", request.if_name);
    return response;
  }
  // DEL: always success; a detach the coordinator did not confirm is retried later.
  if (known != nullptr && !known->detaching) Detach(key, "the runtime deleted it");
  return cni::AttachResponse();
}

cni::AttachResponse PodAttacher::Add(const cni::AttachRequest& request,
                                     const PodRequestContext& context, absl::Time now) {
  const PodAttachmentKey key{request.container_id, request.if_name};
  const PodAttachment* known = store_.Find(key);
  // A repeated ADD (the runtime retries) answers what was attached.
  if (known != nullptr && !known->detaching) return Answer(*known, context);
  PodAttachment a;
  a.container_id = request.container_id;
  a.if_name = request.if_name;
  a.netns = request.netns;
  a.pod_namespace = request.pod_namespace;
  a.pod_name = request.pod_name;
  a.pod_uid = request.pod_uid.empty() ? request.container_id : request.pod_uid;
  a.host_interface = cni::HostInterfaceName(request.container_id);
  a.attached_at = now;
  const std::string what = absl::StrCat("attaching ", PodLabel(a));
  if (!context.connected) {
    return cni::ErrorResponse(
        cni::kCniErrorTryLater,
        absl::StrCat(what, ": the agent of ", context.interface_name,
                     " is not connected to its coordinator",
                     context.disconnected_why.empty() ? "" : " (" + context.disconnected_why + ")",
                     "; the runtime retries the pod"));
  }
  if (absl::Status room = store_.CheckRoom(key); !room.ok()) {
    return cni::ErrorResponse(cni::kCniErrorOutOfAddresses,
                              absl::StrCat(what, ": ", room.message()));
  }
  coord::AttachPodRequest rpc;
  *rpc.mutable_pod() = PodRefOf(a);
  absl::StatusOr<coord::AttachPodResponse> answer = coordinator_->AttachPod(rpc);
  if (!answer.ok()) return RpcError(answer.status(), what);
  if (!answer->attached()) {
    TM_LOG_INFO("{}: not attached: {}", PodLabel(a), answer->reason());
    cni::AttachResponse response;
    response.reason = answer->reason();
    return response;
  }
  if (answer->mesh_ips().empty()) {
    return cni::ErrorResponse(cni::kCniErrorAttachFailed,
                              absl::StrCat(what, ": the coordinator assigned no mesh IP"));
  }
  a.name = answer->name();
  a.addresses.assign(answer->mesh_ips().begin(), answer->mesh_ips().end());
  if (absl::Status s = store_.Put(a); !s.ok()) {
    // Not recorded, so not kept: the coordinator must not keep it either.
    coord::DetachPodRequest undo;
    *undo.mutable_pod() = PodRefOf(a);
    if (absl::StatusOr<coord::DetachPodResponse> d = coordinator_->DetachPod(undo); !d.ok()) {
      TM_LOG_WARN("{}: undoing the attach: {} (the next sync detaches it)", PodLabel(a),
                  std::string(d.status().message()));
      sync_needed_ = true;
    }
    return cni::ErrorResponse(cni::kCniErrorIo, absl::StrCat(what, ": ", s.message()));
  }
  Publish();
  TM_LOG_INFO("{} attached as {} with {}", PodLabel(a), a.name, absl::StrJoin(a.addresses, ", "));
  return Answer(a, context);
}

void PodAttacher::Detach(const PodAttachmentKey& key, const std::string& why) {
  const PodAttachment* found = store_.Find(key);
  if (found == nullptr) return;
  PodAttachment a = *found;
  coord::DetachPodRequest rpc;
  *rpc.mutable_pod() = PodRefOf(a);
  absl::StatusOr<coord::DetachPodResponse> answer = coordinator_->DetachPod(rpc);
  if (answer.ok() || absl::IsNotFound(answer.status())) {
    if (absl::Status s = store_.Remove(key); !s.ok()) {
      TM_LOG_ERROR("{}: detached, but {}", PodLabel(a), std::string(s.message()));
    } else {
      TM_LOG_INFO("{} ({}) detached: {}", PodLabel(a), a.name, why);
    }
  } else {
    if (!a.detaching) {
      TM_LOG_WARN(
          "{}: {}, but the coordinator did not confirm the detach ({}): retrying every 30 s",
          PodLabel(a), why, std::string(answer.status().message()));
    }
    a.detaching = true;
    if (absl::Status s = store_.Put(a); !s.ok()) {
      TM_LOG_ERROR("{}: {}", PodLabel(a), std::string(s.message()));
    }
  }
  Publish();
}

void PodAttacher::Sync() {
  coord::SyncPodsRequest request;
  std::vector<PodAttachmentKey> listed;
  for (const auto& [key, a] : store_.records()) {
    if (a.detaching) continue;
    coord::AttachPodRequest* pod = request.add_pods();
    *pod->mutable_pod() = PodRefOf(a);
    listed.push_back(key);
  }
  absl::StatusOr<coord::SyncPodsResponse> answer = coordinator_->SyncPods(request);
  if (!answer.ok()) {
    sync_needed_ = true;
    // A coordinator without pods has none of this member's to forget.
    if (store_.size() > 0 || !absl::IsUnimplemented(answer.status())) {
      TM_LOG_WARN("stating this agent's {} pods to the coordinator: {}; retrying in 30 s",
                  listed.size(), std::string(answer.status().message()));
    }
    return;
  }
  sync_needed_ = false;
  if (static_cast<size_t>(answer->pods_size()) != listed.size()) {
    TM_LOG_WARN("the coordinator answered SyncPods with {} pods for the {} listed; ignoring it",
                answer->pods_size(), listed.size());
    return;
  }
  for (size_t i = 0; i < listed.size(); ++i) {
    const coord::AttachPodResponse& pod = answer->pods(static_cast<int>(i));
    const PodAttachment* found = store_.Find(listed[i]);
    if (found == nullptr) continue;
    PodAttachment a = *found;
    if (!pod.attached()) {
      TM_LOG_WARN(
          "{} ({}): the coordinator no longer admits it ({}); forgotten (its interface stays until "
          "the pod is deleted)",
          PodLabel(a), a.name, pod.reason());
      if (absl::Status s = store_.Remove(listed[i]); !s.ok()) {
        TM_LOG_ERROR("{}", std::string(s.message()));
      }
      continue;
    }
    std::vector<std::string> addresses(pod.mesh_ips().begin(), pod.mesh_ips().end());
    if (!addresses.empty() && addresses != a.addresses) {
      TM_LOG_WARN(
          "{}: the coordinator now gives it {} instead of {} (it lost its state?); the pod keeps "
          "its old addresses until it is recreated",
          PodLabel(a), absl::StrJoin(addresses, ", "), absl::StrJoin(a.addresses, ", "));
      a.addresses = std::move(addresses);
      if (!pod.name().empty()) a.name = pod.name();
      if (absl::Status s = store_.Put(std::move(a)); !s.ok()) {
        TM_LOG_ERROR("{}", std::string(s.message()));
      }
    }
  }
  // The coordinator detached every pod the request did not list, the detaching ones included.
  std::vector<PodAttachmentKey> detaching;
  for (const auto& [key, a] : store_.records()) {
    if (a.detaching) detaching.push_back(key);
  }
  for (const PodAttachmentKey& key : detaching) {
    if (absl::Status s = store_.Remove(key); !s.ok()) TM_LOG_ERROR("{}", std::string(s.message()));
  }
  Publish();
}

void PodAttacher::Collect(absl::Time now) {
  for (const PodAttachmentKey& key :
       VanishedAttachments(store_.records(), interface_exists_, now, grace_)) {
    const PodAttachment* a = store_.Find(key);
    if (a == nullptr) continue;
    Detach(key, absl::StrCat("its host interface ", a->host_interface,
                             " is gone (the pod's network namespace went away)"));
  }
  std::vector<PodAttachmentKey> detaching;
  for (const auto& [key, a] : store_.records()) {
    if (a.detaching) detaching.push_back(key);
  }
  for (const PodAttachmentKey& key : detaching)
    Detach(key, "the coordinator confirmed an earlier detach");
  if (sync_needed_) Sync();
}

}  // namespace tunnelmesh
