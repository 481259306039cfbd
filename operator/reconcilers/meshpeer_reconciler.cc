#include "operator/reconcilers/meshpeer_reconciler.h"

#include <algorithm>

#include "lib/base/log.h"
#include "operator/kube/conditions.h"
#include "operator/kube/object.h"
#include "operator/store/meshpeer_store.h"

namespace tunnelmesh {
namespace {

using kube::ObjectGeneration;
using kube::ObjectStatus;

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

// Better paths rank higher: a change to a lower one is a Warning.
int PathRank(coord::PathKind path) {
  switch (path) {
    case coord::PATH_KIND_DIRECT:
      return 3;
    case coord::PATH_KIND_SSH:
      return 2;
    case coord::PATH_KIND_RELAY:
      return 1;
    default:
      return 0;
  }
}

}  // namespace

MeshPeerReconciler::MeshPeerReconciler(kube::Api* api, kube::EventRecorder* events,
                                       Coordinator* coordinator, const kube::Informer* peers,
                                       Options options)
    : api_(api),
      events_(events),
      coordinator_(coordinator),
      peers_(peers),
      options_(options),
      status_(api, kube::kMeshPeers) {}

std::vector<std::string> MeshPeerReconciler::MemberNames() const {
  std::vector<std::string> names;
  for (const MemberStatus& m : coordinator_->Members()) names.push_back(m.record.name);
  return names;
}

const std::map<PublicKey, MemberStatus>& MeshPeerReconciler::Members() {
  const absl::Time now = absl::Now();
  if (now - members_at_ > options_.members_max_age) {
    members_.clear();
    for (MemberStatus& m : coordinator_->Members()) {
      PublicKey key = m.record.public_key;
      members_.emplace(key, std::move(m));
    }
    members_at_ = now;
  }
  return members_;
}

absl::StatusOr<Result> MeshPeerReconciler::Reconcile(const std::string& name) {
  std::optional<nlohmann::json> object = peers_->Find("", name);
  if (!object) {
    // The cache may not have seen a MeshPeer the coordinator's store just wrote: ask the server.
    absl::StatusOr<nlohmann::json> live = api_->Get(kube::kMeshPeers, "", name);
    if (live.ok()) return Result{options_.status_period};  // The informer catches up.
    if (!absl::IsNotFound(live.status())) return live.status();
    problems_.erase(name);
    path_bookmarks_.erase(name);
    status_.Forget(name);
    // By name: the deleted object's key may have been edited or be unreadable.
    for (const MemberStatus& member : coordinator_->Members()) {
      if (member.record.name == name) {
        coordinator_->Evict(member.record.public_key, "MeshPeer " + name + " was deleted");
        members_at_ = absl::InfinitePast();
      }
    }
    return Result{};
  }
  if (kube::BeingDeleted(*object)) return Result{};
  absl::StatusOr<MemberRecord> record = MeshPeerToRecord(*object);
  absl::Status admitted = record.ok() ? coordinator_->Admit(*record) : record.status();
  // The member was removed and this object's deletion is on its way: nothing to report on it.
  if (absl::IsAborted(admitted)) return Result{options_.status_period};
  if (!admitted.ok()) {
    Problem problem{ReasonFor(admitted), std::string(admitted.message())};
    auto old = problems_.find(name);
    if (old == problems_.end() || old->second.message != problem.message) {
      TM_LOG_WARN("MeshPeer {} not admitted: {}", name, problem.message);
      events_->Warning(*object, problem.reason, problem.message);
    }
    problems_[name] = problem;
    nlohmann::json status = ObjectStatus(*object);
    kube::SetCondition(&status, "Ready", false, problem.reason, problem.message,
                       ObjectGeneration(*object));
    status_.Write(*object, status);
    return Result{options_.status_period};
  }
  if (problems_.erase(name) > 0) members_at_ = absl::InfinitePast();
  status_.Write(*object, DesiredStatus(*object, *record));
  return Result{options_.status_period};
}

nlohmann::json MeshPeerReconciler::DesiredStatus(const nlohmann::json& object,
                                                 const MemberRecord& record) {
  nlohmann::json status = ObjectStatus(object);
  const int64_t generation = ObjectGeneration(object);
  const std::map<PublicKey, MemberStatus>& members = Members();
  auto member = members.find(record.public_key);
  if (member == members.end()) {
    members_at_ = absl::InfinitePast();  // Admitted just now: look again next time.
    return status;
  }
  MemberStatus m = member->second;
  if (m.last_seen == absl::InfinitePast()) {
    // Not seen by this operator (it restarted, or took over): what an earlier one recorded.
    if (std::optional<absl::Time> seen = kube::ParseRfc3339(kube::StringAt(status, "lastSeen"))) {
      m.last_seen = *seen;
    }
  }
  const nlohmann::json ips = MeshIpsJson(m.record.mesh_ips);
  status["meshIPs"] = ips;
  status["endpoints"] = m.endpoints.empty() ? m.record.static_endpoints : m.endpoints;
  if (m.last_seen != absl::InfinitePast()) status["lastSeen"] = kube::FormatRfc3339(m.last_seen);
  const std::string address = ips.empty() ? "" : ips[0].get<std::string>();
  if (m.record.pod) {
    // A pod is as reachable as its host, whose tunnel carries it.
    auto host = members.find(m.record.pod->host);
    const std::string host_name = host != members.end() ? host->second.record.name : "?";
    status["pathSummary"] = "via " + host_name;
    if (host != members.end() && host->second.connected) {
      kube::SetCondition(&status, "Ready", true, "Attached",
                         "Attached as " + address + " through its host " + host_name + ".",
                         generation);
    } else {
      kube::SetCondition(
          &status, "Ready", false, "HostDisconnected",
          "Its host " + host_name + " has no agent connected; established tunnels may still work.",
          generation);
    }
    return status;
  }
  ApplyPeerPaths(object, m, m.connected, &status);
  if (m.connected) {
    status["pathSummary"] = std::to_string(m.paths.direct) + " direct, " +
                            (m.paths.ssh > 0 ? std::to_string(m.paths.ssh) + " ssh, " : "") +
                            std::to_string(m.paths.relayed) + " relay";
    kube::SetCondition(&status, "Ready", true, "Connected",
                       "The member's agent follows the network map as " + address + ".",
                       generation);
  } else if (m.last_seen == absl::InfinitePast()) {
    status["pathSummary"] = "no agent";
    kube::SetCondition(&status, "Ready", true, "Admitted",
                       "Admitted as " + address +
                           "; no agent has connected (a static WireGuard member, or its agent "
                           "has not joined yet).",
                       generation);
  } else {
    status["pathSummary"] = "disconnected";
    kube::SetCondition(&status, "Ready", false, "Disconnected",
                       "No agent connected since " + kube::FormatRfc3339(m.last_seen) +
                           "; established tunnels may still work. Check that tunnelmesh-agent "
                           "runs on this member and reaches the coordinator.",
                       generation);
  }
  return status;
}

void MeshPeerReconciler::ApplyPeerPaths(const nlohmann::json& object, const MemberStatus& member,
                                        bool connected, nlohmann::json* status) {
  const std::string name = kube::ObjectName(object);
  uint64_t& bookmark = path_bookmarks_[name];
  const MemberPaths paths =
      coordinator_->PathsOf(member.record.public_key, kListedPeerPaths, bookmark);
  size_t shown = 0;
  for (const PathChange& c : paths.changes) {
    bookmark = std::max(bookmark, c.seq);
    if (shown++ >= kPathEventsPerReconcile) continue;
    const std::string message = "The path to " + c.peer + " changed from " + PathKindWord(c.from) +
                                " to " + PathKindWord(c.to) + ".";
    if (PathRank(c.to) >= PathRank(c.from)) {
      events_->Normal(object, "PathChanged", message);
    } else {
      events_->Warning(object, "PathChanged", message);
    }
  }
  if (shown > kPathEventsPerReconcile || paths.changes_lost) {
    const size_t more = shown > kPathEventsPerReconcile ? shown - kPathEventsPerReconcile : 0;
    std::string message = paths.changes_lost
                              ? "More path changes happened than the coordinator keeps"
                              : std::to_string(more) + " more path changes happened";
    message += " since the last look; status.peerPaths shows the paths now.";
    events_->Normal(object, "PathChanged", message);
  }
  if (!connected || paths.total == 0) {
    status->erase("peerPaths");
    status->erase("peerPathsNotListed");
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [peer, path] : paths.first) {
    list.push_back({{"peer", peer}, {"path", PathKindWord(path)}});
  }
  (*status)["peerPaths"] = std::move(list);
  if (paths.total > paths.first.size()) {
    (*status)["peerPathsNotListed"] = paths.total - paths.first.size();
  } else {
    status->erase("peerPathsNotListed");
  }
}

}  // namespace tunnelmesh
