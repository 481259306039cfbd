// MeshPeer objects as the coordinator's durable member store in Kubernetes mode: the API server
// is the database, so registrations and address allocations survive operator restarts. Put
// creates or updates the member's cluster-scoped MeshPeer (spec, labels) and writes its addresses
// to status.meshIPs; Update does the same for a member whose MeshPeer exists but never creates
// it (NOT_FOUND when it is gone: an admin deleted it after the coordinator admitted the member,
// and a queued write must not bring it back); Remove deletes it. Changes made by others (an admin
// creating, editing or deleting a MeshPeer) reach the coordinator through MeshPeerReconciler, which
// calls Coordinator::Admit / Evict, and those update this store's memory through Observe.
//
// Thread-compatible: only the Coordinator's MemberWriter thread calls it (after the Coordinator
// read members() at construction). Put, Update and Remove block on the API server (a few
// milliseconds on a healthy control plane).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "operator/api/meshpeer.h"
#include "operator/coordinator/state_store.h"
#include "operator/kube/api.h"

namespace tunnelmesh {

// MeshPeer <-> MemberRecord. The record's name is the object's name; addresses come from
// status.meshIPs (unparsable ones are dropped, and the coordinator allocates anew). Errors name
// the field to fix.
[[nodiscard]] absl::StatusOr<MemberRecord> MeshPeerToRecord(const nlohmann::json& object);
// The MeshPeer's metadata (name, labels) and spec for `record`.
nlohmann::json MeshPeerFor(const MemberRecord& record);

class KubeMemberStore final : public MemberStore {
 public:
  explicit KubeMemberStore(kube::Api* client) : client_(client) {}

  const std::map<PublicKey, MemberRecord>& members() const override { return members_; }
  [[nodiscard]] absl::Status Put(const MemberRecord& record) override;
  [[nodiscard]] absl::Status Update(const MemberRecord& record) override;
  [[nodiscard]] absl::Status Remove(const PublicKey& key) override;
  void Observe(const PublicKey& key, const MemberRecord* record) override;

 private:
  // Put (`create`) or Update: renames, then writes the object and the status.
  [[nodiscard]] absl::Status Write(const MemberRecord& record, bool create);
  [[nodiscard]] absl::Status WriteObject(const MemberRecord& record, bool create);

  kube::Api* const client_;
  std::map<PublicKey, MemberRecord> members_;
};

}  // namespace tunnelmesh
