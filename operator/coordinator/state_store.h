// The standalone coordinator's durable state: one record per member (public key, name, mesh IPs,
// labels, kind), kept in STATE_DIR/members.json and rewritten atomically (write a temporary file,
// fsync, rename, fsync the directory) on every change, so a crash never leaves a torn file and a
// restart hands every member the same addresses. The kind is written as its name ("Node", "Pod",
// "External"); files from before that hold a number, which still loads.
// Thread-compatible: the Coordinator's MemberWriter thread is its only user once it serves.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

struct MemberRecord {
  PublicKey public_key;
  std::string mesh;
  std::string name;
  std::vector<IpAddress> mesh_ips;
  std::map<std::string, std::string> labels;
  // Node, Pod or External (a member registered without a kind is External).
  coord::MemberKind kind = coord::MEMBER_KIND_EXTERNAL;
  // Endpoints an admin gave a static member (MeshPeer spec.endpoints); live reports win.
  std::vector<std::string> static_endpoints;
  // More DNS labels of the member (MeshPeer spec.aliases, `join --alias`).
  std::vector<std::string> aliases;

  bool operator==(const MemberRecord&) const = default;
};

// Where member records live: a file (StateStore, standalone) or MeshPeer objects (Kubernetes).
// Thread-compatible: after the Coordinator read members() at construction, only its MemberWriter
// thread calls it, outside the Coordinator's lock (Put and Remove may block on I/O).
class MemberStore {
 public:
  virtual ~MemberStore() = default;
  virtual const std::map<PublicKey, MemberRecord>& members() const = 0;
  // Makes `record` durable (creating or replacing the member's record).
  [[nodiscard]] virtual absl::Status Put(const MemberRecord& record) = 0;
  // Makes `record` durable for a member whose record exists at its source, without creating it:
  // NOT_FOUND when someone else deleted it meanwhile (an admin deleting a MeshPeer), so that a
  // write queued before that delete does not bring the member back. Stores that nobody else
  // writes (members.json) have nothing to lose: Put.
  [[nodiscard]] virtual absl::Status Update(const MemberRecord& record) { return Put(record); }
  // Deletes the member's durable record.
  [[nodiscard]] virtual absl::Status Remove(const PublicKey& key) = 0;
  // Updates only the in-memory view, for records that already changed at the source (a MeshPeer
  // created, edited or deleted by someone else). `record` null removes the key.
  virtual void Observe(const PublicKey& key, const MemberRecord* record) = 0;
};

class StateStore final : public MemberStore {
 public:
  // Creates `dir` if needed (mode 0700) and loads members.json when present. A corrupt file is an
  // error that names it (it is never silently replaced).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);

  const std::map<PublicKey, MemberRecord>& members() const override { return members_; }
  const std::string& dir() const { return dir_; }

  [[nodiscard]] absl::Status Put(const MemberRecord& record) override;
  [[nodiscard]] absl::Status Remove(const PublicKey& key) override;
  void Observe(const PublicKey& key, const MemberRecord* record) override;

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  [[nodiscard]] absl::Status Save() const;

  std::string dir_;
  std::map<PublicKey, MemberRecord> members_;
};

}  // namespace tunnelmesh
