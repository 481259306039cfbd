// MeshPeer objects as the coordinator's durable member store in Kubernetes mode: the API server
// is the database, so registrations and address allocations survive operator restarts. Put
// creates or updates the member's cluster-scoped MeshPeer (spec, labels) and writes its addresses
// to status.meshIPs; Update does the same for a member whose MeshPeer exists but never creates
// it (NOT_FOUND when it is gone: an admin deleted it after the coordinator admitted the member,
// and a queued write must not bring it back); Remove deletes it. Changes made by others (an admin
// creating, editing or deleting a MeshPeer) reach the coordinator through MeshPeerReconciler, which
// calls Coordinator::Admit / Evict, and those update this store's memory through Observe.
//
// The quarantine of departed members' addresses and names (MemberStore::SaveQuarantine) is kept
// in the operator's keys Secret (--coordinator-secret), data key "quarantine", as the text
// EncodeQuarantine makes: the chart's Role already grants get and update on that Secret, and
// MeshPeers cannot hold it (a departed member's MeshPeer is deleted). Update, not patch, with the
// resourceVersion of the Get: a concurrent writer (the preshared keys) makes it a conflict,
// which the MemberWriter retries.
//
// Thread-compatible: only the Coordinator's MemberWriter thread calls it (after the Coordinator
// read members() at construction). Put, Update and Remove block on the API server (a few
// milliseconds on a healthy control plane).
#pragma once

#include <map>
#include <string>
#include <vector>

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

// The Secret that keeps the quarantine; an empty name keeps it in memory only (tests).
struct QuarantineSecret {
  std::string ns;
  std::string name;
};

class KubeMemberStore final : public MemberStore {
 public:
  static constexpr char kQuarantineKey[] = "quarantine";

  explicit KubeMemberStore(kube::Api* client, QuarantineSecret secret = {})
      : client_(client), secret_(std::move(secret)) {}

  // Reads the quarantine from the Secret (none when the Secret or its key is missing); call it
  // before the Coordinator is made. A corrupt entry is an error naming the Secret.
  [[nodiscard]] absl::Status LoadQuarantine();
  std::vector<QuarantineEntry> quarantine() const override { return quarantine_; }
  [[nodiscard]] absl::Status SaveQuarantine(const std::vector<QuarantineEntry>& entries) override;

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
  const QuarantineSecret secret_;
  std::map<PublicKey, MemberRecord> members_;
  std::vector<QuarantineEntry> quarantine_;  // As LoadQuarantine read it.
};

}  // namespace tunnelmesh
