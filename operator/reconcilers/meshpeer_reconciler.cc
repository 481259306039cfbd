#include "operator/reconcilers/meshpeer_reconciler.h"

#include "lib/base/log.h"
#include "operator/kube/api_status.h"
#include "operator/kube/conditions.h"
#include "operator/kube/resource.h"
#include "operator/reconcilers/meshpeer_store.h"

namespace tunnelmesh {
namespace {

// A CamelCase reason for a refusal from the coordinator.
std::string ReasonFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      return "InvalidSpec";
    case absl::StatusCode::kFailedPrecondition:
      return "MeshNotFound";
    case absl::StatusCode::kAlreadyExists:
      return "NameTaken";
    case absl::StatusCode::kResourceExhausted:
      return "AddressesExhausted";
    default:
      return "NotAdmitted";
  }
}

}  // namespace

kube::Informer::Handlers MeshPeerReconciler::Handlers() {
  kube::Informer::Handlers h;
  h.on_upsert = [this](const nlohmann::json& object) { OnUpsert(object); };
  h.on_delete = [this](const nlohmann::json& object) { OnDelete(object); };
  return h;
}

void MeshPeerReconciler::OnUpsert(const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  if (BeingDeleted(object)) return;
  absl::StatusOr<MemberRecord> record = MeshPeerToRecord(object);
  absl::Status admitted = record.ok() ? coordinator_->Admit(*record) : record.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (admitted.ok()) {
    problems_.erase(name);
    return;
  }
  const std::string reason = ReasonFor(admitted);
  const std::string message(admitted.message());
  auto& problem = problems_[name];
  if (problem.second != message) {
    TM_LOG_WARN("MeshPeer {} not admitted: {}", name, message);
    events_->Warning(object, reason, message);
  }
  problem = {reason, message};
}

void MeshPeerReconciler::OnDelete(const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  {
    std::lock_guard<std::mutex> lock(mu_);
    problems_.erase(name);
  }
  status_.Forget(name);
  // Find the member by name: the object's key may have been edited or be unreadable.
  for (const MemberStatus& member : coordinator_->Members()) {
    if (member.record.name == name) {
      coordinator_->Evict(member.record.public_key, "MeshPeer " + name + " was deleted");
    }
  }
}

void MeshPeerReconciler::ResyncAll() {
  if (informer_ == nullptr) return;
  for (const nlohmann::json& object : informer_->Snapshot()) OnUpsert(object);
}

nlohmann::json MeshPeerReconciler::DesiredStatus(const nlohmann::json& object,
                                                 const std::map<PublicKey, MemberStatus>& members) {
  const std::string name = ObjectName(object);
  nlohmann::json status = ObjectStatus(object);
  const int64_t generation = ObjectGeneration(object);
  auto problem = problems_.find(name);
  if (problem != problems_.end()) {
    kube::SetCondition(&status, "Ready", false, problem->second.first, problem->second.second,
                       generation);
    return status;
  }
  absl::StatusOr<MemberRecord> record = MeshPeerToRecord(object);
  if (!record.ok()) return status;
  auto member = members.find(record->public_key);
  if (member == members.end()) return status;  // Not admitted yet.
  MemberStatus m = member->second;
  if (m.last_seen == absl::InfinitePast()) {
    // Not seen by this operator (it restarted, or took over): what an earlier one recorded.
    if (std::optional<absl::Time> seen = kube::ParseRfc3339(kube::StringAt(status, "lastSeen"))) {
      m.last_seen = *seen;
    }
  }
  nlohmann::json ips = nlohmann::json::array();
  for (const IpAddress& ip : m.record.mesh_ips) ips.push_back(ip.ToString());
  status["meshIPs"] = ips;
  status["endpoints"] = m.endpoints.empty() ? m.record.static_endpoints : m.endpoints;
  if (m.last_seen != absl::InfinitePast()) status["lastSeen"] = kube::FormatRfc3339(m.last_seen);
  const std::string address = ips.empty() ? "" : ips[0].get<std::string>();
  if (m.connected) {
    status["pathSummary"] = std::to_string(m.paths.direct) + " direct, " +
                            std::to_string(m.paths.relayed) + " relay";
  } else {
    status["pathSummary"] = m.last_seen == absl::InfinitePast() ? "no agent" : "disconnected";
  }
  if (m.connected) {
    kube::SetCondition(&status, "Ready", true, "Connected",
                       "The member's agent follows the network map as " + address + ".",
                       generation);
  } else if (m.last_seen == absl::InfinitePast()) {
    kube::SetCondition(&status, "Ready", true, "Admitted",
                       "Admitted as " + address + "; no agent has connected (a static "
                       "WireGuard member, or its agent has not joined yet).",
                       generation);
  } else {
    kube::SetCondition(&status, "Ready", false, "Disconnected",
                       "No agent connected since " + kube::FormatRfc3339(m.last_seen) +
                           "; established tunnels may still work. Check that tunnelmesh-agent "
                           "runs on this member and reaches the coordinator.",
                       generation);
  }
  return status;
}

void MeshPeerReconciler::WriteStatus() {
  if (informer_ == nullptr || !informer_->HasSynced()) return;
  std::map<PublicKey, MemberStatus> members;
  for (MemberStatus& m : coordinator_->Members()) {
    PublicKey key = m.record.public_key;
    members.emplace(key, std::move(m));
  }
  for (const nlohmann::json& object : informer_->Snapshot()) {
    if (BeingDeleted(object)) continue;
    nlohmann::json desired;
    {
      std::lock_guard<std::mutex> lock(mu_);
      desired = DesiredStatus(object, members);
    }
    status_.Write(object, desired);
  }
}

}  // namespace tunnelmesh
