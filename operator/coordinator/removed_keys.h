// The keys an admin removed from the standalone coordinator (`tunnelmesh-operator remove`): such a
// key is refused at Register, with a message that says how to re-admit it, until an admin runs
// `tunnelmesh-operator readmit`. Kept in STATE_DIR/removed-keys.json (mode 0600, written
// atomically before a removal or re-admission takes effect), so that a coordinator restart keeps
// them out. A damaged file is an error that names it: it is never replaced silently, which would
// let every removed key back in.
//
// Threads: Find and List take mu_ briefly and do no I/O (Register calls Find under the
// coordinator's lock). Add and Readmit serialize on write_mu_ and hold it, never mu_, while the
// file is written.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {

inline constexpr char kRemovedKeysFile[] = "removed-keys.json";
// A bound on the file and the map: far more than a mesh of thousands of members ever removes.
inline constexpr size_t kMaxRemovedKeys = 65536;

struct RemovedKey {
  PublicKey key;
  std::string name;  // The member's name when it was removed; empty for a key that was none's.
  std::string mesh;
  absl::Time removed_at;

  bool operator==(const RemovedKey&) const = default;
};

class RemovedKeys {
 public:
  // Loads STATE_DIR/removed-keys.json (none when it does not exist). An empty `state_dir` keeps
  // the keys in memory only (tests).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RemovedKeys>> Open(
      const std::string& state_dir);

  std::optional<RemovedKey> Find(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);
  // Oldest removal first.
  std::vector<RemovedKey> List() const ABSL_LOCKS_EXCLUDED(mu_);
  // Makes the removal durable, then refuses the key. AlreadyExists when it is removed already.
  [[nodiscard]] absl::Status Add(RemovedKey entry) ABSL_LOCKS_EXCLUDED(write_mu_, mu_);
  // Makes the re-admission durable, then admits the key again; returns what was removed.
  // NotFound when the key is not removed.
  [[nodiscard]] absl::StatusOr<RemovedKey> Readmit(const PublicKey& key)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);

  // What Register answers a removed key: PERMISSION_DENIED (the agent stops and exits 1) saying
  // who removed it, when, and the command that re-admits it.
  absl::Status Refusal(const RemovedKey& entry) const;
  const std::string& state_dir() const { return state_dir_; }

 private:
  explicit RemovedKeys(std::string state_dir) : state_dir_(std::move(state_dir)) {}
  [[nodiscard]] absl::Status Save(const std::map<PublicKey, RemovedKey>& keys) const;

  const std::string state_dir_;
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<PublicKey, RemovedKey> keys_ ABSL_GUARDED_BY(mu_);
};

// "2026-12-06T15:04:05Z": how admin files and answers write times.
std::string UtcTime(absl::Time t);

// The JSON text of removed-keys.json, and back; `where` names the file in errors.
std::string EncodeRemovedKeys(const std::map<PublicKey, RemovedKey>& keys);
[[nodiscard]] absl::StatusOr<std::map<PublicKey, RemovedKey>> DecodeRemovedKeys(
    const std::string& text, const std::string& where);

}  // namespace tunnelmesh
