// The Coordinator's pod members (declared in coordinator.h, split from coordinator.cc): a member
// that runs pods (the CNI plugin asks its agent, docs/pods.md) attaches them one by one, detaches
// them, and states the whole set after every registration. A pod is a member record of kind Pod
// keyed by PodMemberId: it has no key, no session and no watch; its host's Peer lists the pod's
// addresses in allowed_ips, so only that host may send from them (the receivers' inner-source
// check) and every member routes them into the host's tunnel.
//
// In Kubernetes (Options::lookup_pod) the API server, not the host, says which pods run on the
// host's Node, whether they opted in (annotation tunnelmesh.io/mesh on the Pod or its namespace)
// and what their labels are: a node cannot claim another node's pods or labels that PeerPolicies
// select. The lookup runs before mu_ is taken.
#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/coordinator_locked.h"

namespace tunnelmesh {
namespace {

constexpr size_t kMaxPodLabels = 64;
// SyncPods states every pod of one host; more than this is refused (the agent keeps as many).
constexpr int kMaxPodsPerHost = 1024;

std::string KeyString(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), key.bytes.size());
}

absl::Status CheckRequest(const coord::PodRef& ref) {
  return CheckPodRef(ref.namespace_(), ref.name(), ref.uid());
}

std::string PodText(const coord::PodRef& ref) { return ref.namespace_() + "/" + ref.name(); }

}  // namespace

absl::StatusOr<coord::AttachPodResponse> Coordinator::AttachPod(
    const PublicKey& host, const coord::AttachPodRequest& request) {
  if (!pod_limit_.Allow(KeyString(host), absl::Now())) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many pod attach calls from this member; retry later");
  }
  return AttachPodUnlimited(host, request);
}

absl::StatusOr<coord::AttachPodResponse> Coordinator::AttachPodUnlimited(
    const PublicKey& host, const coord::AttachPodRequest& request) {
  if (absl::Status s = CheckRequest(request.pod()); !s.ok()) {
    counters_.pods_refused.fetch_add(1);
    return s;
  }
  if (request.labels_size() > static_cast<int>(kMaxPodLabels)) {
    counters_.pods_refused.fetch_add(1);
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxPodLabels, " pod labels"));
  }
  for (const auto& [k, v] : request.labels()) {
    if (absl::Status s = CheckLabel(k, v); !s.ok()) {
      counters_.pods_refused.fetch_add(1);
      return s;
    }
  }
  if (!options_.lookup_pod) return AttachPodChecked(host, request, nullptr);

  // Kubernetes: which Node and Mesh the host is on, then the API server, without mu_.
  std::string node;
  std::string mesh;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto record = members_.find(host);
    if (record == members_.end() || record->second.pod) {
      return absl::NotFoundError("not a member: register");
    }
    if (record->second.kind != coord::MEMBER_KIND_NODE) {
      counters_.pods_refused.fetch_add(1);
      return absl::PermissionDeniedError(
          "only members of kind Node host pods in a Kubernetes mesh (this member is \"" +
          record->second.name + "\")");
    }
    auto label = record->second.labels.find(kNodeLabel);
    if (label != record->second.labels.end()) node = label->second;
    mesh = record->second.mesh;
  }
  const std::string text = PodText(request.pod());
  absl::StatusOr<PodFacts> facts =
      options_.lookup_pod(request.pod().namespace_(), request.pod().name());
  if (!facts.ok()) {
    if (absl::IsNotFound(facts.status())) {
      counters_.pods_refused.fetch_add(1);
      return absl::NotFoundError("there is no Pod " + text + " in the cluster");
    }
    return absl::UnavailableError("reading Pod " + text +
                                  " from the API server: " + std::string(facts.status().message()));
  }
  if (facts->node != node) {
    counters_.pods_refused.fetch_add(1);
    return absl::PermissionDeniedError("Pod " + text + " runs on Node \"" + facts->node +
                                       "\", not on this member's Node \"" + node + "\"");
  }
  if (facts->uid != request.pod().uid()) {
    counters_.pods_refused.fetch_add(1);
    return absl::FailedPreconditionError("Pod " + text + " has uid " + facts->uid +
                                         " now; the pod with uid " + request.pod().uid() +
                                         " is gone");
  }
  coord::AttachPodResponse refused;
  if (facts->mesh_annotation.empty()) {
    refused.set_reason(absl::StrCat("neither Pod ", text, " nor its namespace has the annotation ",
                                    kPodMeshAnnotation));
  } else if (facts->mesh_annotation != mesh) {
    refused.set_reason(absl::StrCat("Pod ", text, " is annotated for Mesh \"",
                                    facts->mesh_annotation, "\"; this node is in Mesh \"", mesh,
                                    "\""));
  }
  if (!refused.reason().empty()) return refused;
  return AttachPodChecked(host, request, &*facts);
}

absl::StatusOr<coord::AttachPodResponse> Coordinator::AttachPodChecked(
    const PublicKey& host, const coord::AttachPodRequest& request, const PodFacts* facts) {
  Locked lock(this);
  auto host_record = members_.find(host);
  if (host_record == members_.end() || host_record->second.pod) {
    return absl::NotFoundError("not a member: register");
  }
  const MeshState* mesh = MeshFor(host_record->second.mesh);
  if (mesh == nullptr) {
    return absl::FailedPreconditionError("this member's Mesh \"" + host_record->second.mesh +
                                         "\" is not served now");
  }
  MemberRecord record;
  record.kind = coord::MEMBER_KIND_POD;
  record.mesh = host_record->second.mesh;
  record.name = PodMemberName(request.pod().namespace_(), request.pod().name());
  PodIdentity pod;
  pod.host = host;
  pod.namespace_name = request.pod().namespace_();
  pod.pod_name = request.pod().name();
  pod.uid = request.pod().uid();
  if (facts != nullptr) {
    pod.namespace_labels = facts->namespace_labels;
    record.labels = facts->labels;
  } else {
    record.labels.insert(request.labels().begin(), request.labels().end());
  }
  // Keys under tunnelmesh.io/ are the coordinator's (kNodeLabel marks Node members).
  std::erase_if(record.labels,
                [](const auto& label) { return label.first.rfind("tunnelmesh.io/", 0) == 0; });
  if (pod.namespace_labels.empty()) {
    pod.namespace_labels[policy::kNamespaceNameLabel] = pod.namespace_name;
  }
  record.public_key = PodMemberId(pod);
  record.pod = pod;

  std::optional<MemberRecord> old;
  if (auto it = members_.find(record.public_key); it != members_.end()) {
    old = it->second;
    record.mesh_ips = it->second.mesh_ips;
  } else {
    // A pod name is one pod at a time: an older incarnation (another uid, or the same pod seen
    // from another host) that was never detached goes now.
    std::vector<PublicKey> stale;
    for (const auto& [key, other] : members_) {
      if (other.pod && other.name == record.name) stale.push_back(key);
    }
    for (const PublicKey& key : stale) {
      TM_LOG_INFO("pod member replaced by a new incarnation: name={}", record.name);
      RemovePodLocked(key);
    }
  }
  absl::StatusOr<std::vector<IpAddress>> ips = AddressesFor(*mesh, record);
  if (!ips.ok()) {
    counters_.pods_refused.fetch_add(1);
    return ips.status();
  }
  record.mesh_ips = *std::move(ips);

  coord::AttachPodResponse response;
  response.set_attached(true);
  response.set_name(record.name);
  for (const IpAddress& ip : record.mesh_ips) response.add_mesh_ips(ip.ToString());
  response.add_mesh_cidrs(mesh->spec.ipv4_cidr.ToString());
  if (mesh->spec.ipv6_cidr) response.add_mesh_cidrs(mesh->spec.ipv6_cidr->ToString());
  counters_.pods_attached.fetch_add(1);
  if (old && *old == record) return response;  // Attached again, unchanged: nothing to write.

  members_[record.public_key] = record;
  pods_by_host_[host].insert(record.public_key);
  if (old) {
    writer_.Update(record);
  } else {
    writer_.Put(record);
  }
  SyncFilterLocked(old ? &*old : nullptr, &record);
  FanOutHostLocked(host, &record, nullptr);
  SendFiltersLocked();
  lock.Release();
  // Like Register: the pod is told its addresses once a restart would hand them back.
  if (absl::Status s = writer_.WaitDurable(record.public_key, options_.register_write_deadline);
      !s.ok()) {
    return absl::UnavailableError("persisting the pod member: " + std::string(s.message()));
  }
  if (!old) {
    TM_LOG_INFO("pod attached: name={} mesh_ips={}", record.name, response.mesh_ips(0));
  }
  return response;
}

absl::StatusOr<coord::DetachPodResponse> Coordinator::DetachPod(
    const PublicKey& host, const coord::DetachPodRequest& request) {
  if (!pod_limit_.Allow(KeyString(host), absl::Now())) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many pod detach calls from this member; retry later");
  }
  const coord::PodRef& ref = request.pod();
  Locked lock(this);
  if (!members_.count(host)) return absl::NotFoundError("not a member: register");
  const std::string name = PodMemberName(ref.namespace_(), ref.name());
  std::vector<PublicKey> matching;
  if (auto pods = pods_by_host_.find(host); pods != pods_by_host_.end()) {
    for (const PublicKey& key : pods->second) {
      const MemberRecord& pod = members_.at(key);
      if (pod.name == name && (ref.uid().empty() || pod.pod->uid == ref.uid())) {
        matching.push_back(key);
      }
    }
  }
  for (const PublicKey& key : matching) RemovePodLocked(key);
  if (!matching.empty()) SendFiltersLocked();
  coord::DetachPodResponse response;
  response.set_detached(!matching.empty());
  return response;
}

absl::StatusOr<coord::SyncPodsResponse> Coordinator::SyncPods(
    const PublicKey& host, const coord::SyncPodsRequest& request) {
  // One call of the limit, however many pods it states (up to kMaxPodsPerHost).
  if (!pod_limit_.Allow(KeyString(host), absl::Now())) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many pod calls from this member; retry later");
  }
  if (request.pods_size() > kMaxPodsPerHost) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxPodsPerHost, " pods per member"));
  }
  coord::SyncPodsResponse response;
  std::set<std::string> listed;
  for (const coord::AttachPodRequest& pod : request.pods()) {
    listed.insert(PodMemberName(pod.pod().namespace_(), pod.pod().name()));
    absl::StatusOr<coord::AttachPodResponse> attached = AttachPodUnlimited(host, pod);
    if (attached.ok()) {
      *response.add_pods() = *std::move(attached);
      continue;
    }
    if (absl::IsUnavailable(attached.status()) || absl::IsResourceExhausted(attached.status())) {
      return attached.status();  // The agent tries the whole sync again.
    }
    coord::AttachPodResponse refused;
    refused.set_reason(std::string(attached.status().message()));
    *response.add_pods() = std::move(refused);
  }
  Locked lock(this);
  if (!members_.count(host)) return absl::NotFoundError("not a member: register");
  std::vector<PublicKey> gone;
  if (auto pods = pods_by_host_.find(host); pods != pods_by_host_.end()) {
    for (const PublicKey& key : pods->second) {
      if (!listed.count(members_.at(key).name)) gone.push_back(key);
    }
  }
  for (const PublicKey& key : gone) {
    const PodIdentity& pod = *members_.at(key).pod;
    coord::PodRef* ref = response.add_detached();
    ref->set_namespace_(pod.namespace_name);
    ref->set_name(pod.pod_name);
    ref->set_uid(pod.uid);
    RemovePodLocked(key);
  }
  if (!gone.empty()) SendFiltersLocked();
  return response;
}

void Coordinator::RemovePodLocked(const PublicKey& key) {
  auto it = members_.find(key);
  if (it == members_.end() || !it->second.pod) return;
  const MemberRecord record = it->second;
  const PublicKey host = record.pod->host;
  QuarantineLocked(record);
  SyncFilterLocked(&record, nullptr);
  if (auto pods = pods_by_host_.find(host); pods != pods_by_host_.end()) {
    pods->second.erase(key);
    if (pods->second.empty()) pods_by_host_.erase(pods);
  }
  members_.erase(it);
  writer_.Remove(key);
  counters_.pods_detached.fetch_add(1);
  FanOutHostLocked(host, nullptr, &key);
  TM_LOG_INFO("pod detached: name={}", record.name);
}

void Coordinator::RemovePodsOfLocked(const PublicKey& host) {
  auto pods = pods_by_host_.find(host);
  if (pods == pods_by_host_.end()) return;
  const std::set<PublicKey> keys = pods->second;
  for (const PublicKey& key : keys) RemovePodLocked(key);
}

void Coordinator::FanOutHostLocked(const PublicKey& host, const MemberRecord* pod,
                                   const PublicKey* removed_pod) {
  ++version_;
  coord::MapUpdate to_others;
  coord::MapUpdate to_host;
  if (pod != nullptr) {
    *to_others.add_upsert_peers() = PeerOf(*pod);
    *to_host.add_upsert_peers() = PeerOf(*pod);
  }
  if (removed_pod != nullptr) {
    to_others.add_removed_peers(KeyString(*removed_pod));
    to_host.add_removed_peers(KeyString(*removed_pod));
  }
  auto host_record = members_.find(host);
  if (host_record == members_.end()) return;
  *to_others.add_upsert_peers() = PeerOf(host_record->second);
  to_others.set_version(version_);
  to_host.set_version(version_);
  FanOut(host_record->second.mesh, &host, to_others);
  if (auto live = live_.find(host); live != live_.end()) {
    if (std::shared_ptr<Subscription> sub = live->second.subscription.lock()) {
      PushLocked(sub, std::move(to_host));
    }
  }
}

}  // namespace tunnelmesh
