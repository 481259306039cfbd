// The standalone coordinator's durable state: one record per member (public key, name, mesh IPs,
// labels, kind), kept in STATE_DIR/members.json and rewritten atomically (write a temporary file,
// fsync, rename, fsync the directory) on every change, so a crash never leaves a torn file and a
// restart hands every member the same addresses. The kind is written as its name ("Node", "Pod",
// "External"); files from before that hold a number, which still loads.
//
// Beside it, STATE_DIR/quarantine.json keeps the addresses and names of members that left (see
// Coordinator::Options::quarantine), so that a restart does not hand them to another key at once:
// the same atomic write, mode 0600, expired entries dropped on load and on save, and at most
// kMaxQuarantined entries (the oldest dropped first). In Kubernetes the same text is kept in the
// operator's keys Secret (operator/store/meshpeer_store.h).
// Thread-compatible: the Coordinator's MemberWriter thread is its only user once it serves.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "operator/api/pod_member.h"
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
  // Kind Pod: the pod and the member that hosts it; public_key is then PodMemberId(*pod).
  std::optional<PodIdentity> pod;
  // Exit peers (docs/remote-access.md): it offers itself as one (MeshPeer spec.exitPeer, `join
  // --advertise-exit`), and the ones it routes its internet traffic through, by name, most
  // preferred first (spec.useExitPeer, `join --exit-peer`).
  bool exit_peer = false;
  std::vector<std::string> use_exit_peers;
  // Its SSH server (the SSH path, docs/protocol.md): the Ed25519 host key (32 bytes in the
  // PublicKey type; zero: no SSH server) and its TCP port, as its agent registered them.
  PublicKey ssh_key;
  uint16_t ssh_port = 0;

  bool operator==(const MemberRecord&) const = default;
};

// An address of a member that left, kept from other keys until `until` (Coordinator::Options::
// quarantine). `name` is kept from other keys too.
struct QuarantineEntry {
  IpAddress ip;
  PublicKey key;
  std::string name;
  absl::Time until;

  bool operator==(const QuarantineEntry&) const = default;
};

// The bound of a kept quarantine, in memory and in its file or Secret: with IPv4 and IPv6 two
// entries per member, 2048 departures within a quarantine period. About 120 bytes each.
inline constexpr size_t kMaxQuarantined = 4096;

// Drops the entries that expired at `now`, then the oldest (earliest `until`) beyond `cap`.
void TrimQuarantine(std::vector<QuarantineEntry>* entries, absl::Time now,
                    size_t cap = kMaxQuarantined);
// The quarantine as JSON text ({"quarantine": [{"ip", "key", "name", "until"}]}, `until` in Unix
// seconds), trimmed at `now`; and back, trimmed too. `where` names the file or Secret in errors.
std::string EncodeQuarantine(std::vector<QuarantineEntry> entries, absl::Time now);
[[nodiscard]] absl::StatusOr<std::vector<QuarantineEntry>> DecodeQuarantine(
    std::string_view text, const std::string& where, absl::Time now);

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
  // The quarantine kept when the store was opened (read once, at the Coordinator's construction).
  // Stores that keep none return an empty list.
  virtual std::vector<QuarantineEntry> quarantine() const { return {}; }
  // Makes `entries` the kept quarantine (all of them, replacing what was kept).
  [[nodiscard]] virtual absl::Status SaveQuarantine(const std::vector<QuarantineEntry>& entries) {
    (void)entries;
    return absl::OkStatus();
  }
};

class StateStore final : public MemberStore {
 public:
  // Creates `dir` if needed (mode 0700) and loads members.json and quarantine.json when present.
  // A corrupt file is an error that names it (it is never silently replaced).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);

  const std::map<PublicKey, MemberRecord>& members() const override { return members_; }
  const std::string& dir() const { return dir_; }

  [[nodiscard]] absl::Status Put(const MemberRecord& record) override;
  [[nodiscard]] absl::Status Remove(const PublicKey& key) override;
  void Observe(const PublicKey& key, const MemberRecord* record) override;
  std::vector<QuarantineEntry> quarantine() const override { return quarantine_; }
  [[nodiscard]] absl::Status SaveQuarantine(const std::vector<QuarantineEntry>& entries) override;

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  [[nodiscard]] absl::Status Save() const;

  std::string dir_;
  std::map<PublicKey, MemberRecord> members_;
  std::vector<QuarantineEntry> quarantine_;  // As loaded by Open.
};

}  // namespace tunnelmesh
