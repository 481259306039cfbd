// The standalone coordinator's durable state: one record per member (public key, name, mesh IPs,
// labels, kind), kept in STATE_DIR/members.json and rewritten atomically (write a temporary file,
// fsync, rename, fsync the directory) on every change, so a crash never leaves a torn file and a
// restart hands every member the same addresses. Thread-compatible: the Coordinator guards it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

struct MemberRecord {
  PublicKey public_key;
  std::string mesh;
  std::string name;
  std::vector<IpAddress> mesh_ips;
  std::map<std::string, std::string> labels;
  int kind = 0;
};

class StateStore {
 public:
  // Creates `dir` if needed and loads members.json when present. A corrupt file is an error that
  // names it (it is never silently replaced).
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);

  const std::map<PublicKey, MemberRecord>& members() const { return members_; }
  const std::string& dir() const { return dir_; }

  absl::Status Put(const MemberRecord& record);
  absl::Status Remove(const PublicKey& key);

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Save() const;

  std::string dir_;
  std::map<PublicKey, MemberRecord> members_;
};

// Writes `contents` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode);

}  // namespace tunnelmesh
