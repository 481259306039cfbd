// MeshPeer reconciler: keeps the coordinator in line with the MeshPeer objects and writes their
// status, one object (key = its name) at a time, level-triggered (controller.h). An object that
// exists is admitted into the coordinator (an admin pre-creating a member with a public key, a
// label edit, the objects found at startup); the coordinator allocates missing addresses. A name
// with no object (confirmed with the API server, since the cache may lag a registration's write)
// evicts its member. Status (mesh IPs, endpoints, last seen, path summary, the path to the first
// kListedPeerPaths peers, a Ready condition that says what is wrong) is derived from the
// coordinator's state at each reconcile and written only when it changed; the key is looked at
// again every Options::status_period because a member's connection changes without any MeshPeer
// event. Each path change the coordinator logged since the last look becomes a PathChanged Event
// on the MeshPeer (Normal when the path got better, Warning when worse), at most
// kPathEventsPerReconcile per look and one more that counts the rest.
//
// Thread-compatible: called on its controller's worker only.
#pragma once

#include <map>
#include <string>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/controller.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

class MeshPeerReconciler final : public Reconciler {
 public:
  struct Options {
    absl::Duration status_period = absl::Seconds(1);
    // How old the coordinator's member list may be when a status is derived from it (one copy
    // serves many keys in a row).
    absl::Duration members_max_age = absl::Milliseconds(200);
  };
  // Everything must outlive the reconciler; `peers` is the MeshPeer informer.
  MeshPeerReconciler(kube::Api* api, kube::EventRecorder* events, Coordinator* coordinator,
                     const kube::Informer* peers, Options options);

  [[nodiscard]] absl::StatusOr<Result> Reconcile(const std::string& name) override;

  static constexpr size_t kListedPeerPaths = 16;
  static constexpr size_t kPathEventsPerReconcile = 5;
  // Names of members the coordinator has (after a list: those whose object may be gone).
  std::vector<std::string> MemberNames() const;

 private:
  struct Problem {
    std::string reason, message;
  };
  nlohmann::json DesiredStatus(const nlohmann::json& object, const MemberRecord& record);
  // status.peerPaths and PathChanged Events from what the coordinator holds of the member's paths.
  void ApplyPeerPaths(const nlohmann::json& object, const MemberStatus& member, bool connected,
                      nlohmann::json* status);
  const std::map<PublicKey, MemberStatus>& Members();

  kube::Api* const api_;
  kube::EventRecorder* const events_;
  Coordinator* const coordinator_;
  const kube::Informer* const peers_;
  const Options options_;
  StatusWriter status_;
  std::map<std::string, Problem> problems_;  // objects that cannot be admitted, by name
  // By MeshPeer name: the last path change (PathChange::seq) turned into an Event.
  std::map<std::string, uint64_t> path_bookmarks_;
  std::map<PublicKey, MemberStatus> members_;
  absl::Time members_at_ = absl::InfinitePast();
};

}  // namespace tunnelmesh
