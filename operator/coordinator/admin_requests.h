// The standalone coordinator's admin requests, as the admin socket (STATE_DIR/admin.sock, served
// by tunnelmesh-operator) carries them: one JSON object per line in, one JSON object out. Sans-IO:
// the socket and the `members`, `remove`, `readmit` and `refused` subcommands live in
// operator/admin_commands.cc.
//
//   {"op": "members"}                 -> {"members": [{"name", "mesh", "kind", "mesh_ips",
//                                         "online", "last_seen" (RFC 3339 or null), "public_key",
//                                         "endpoints"}]}
//   {"op": "remove", "member": X}     -> {"removed": {"public_key", "name", "mesh", "was_member"}}
//                                         X: a member's name, its base64 key, or a unique prefix
//                                         of it (4 characters or more); a full key that is no
//                                         member's is refused from then on too
//   {"op": "readmit", "key": X}       -> {"readmitted": {"public_key", "name", "mesh"}}
//                                         X: a removed key, a unique prefix, or the removed
//                                         member's name
//   {"op": "removed"}                 -> {"removed": [{"public_key", "name", "mesh",
//   "removed_at"}]}
//   {"op": "refused"}                 -> {"refused": [{"time", "source", "key", "name", "mesh",
//                                         "code", "reason"}], "total", "capacity"}
//   any failure                       -> {"error": "what to fix", "code": "NOT_FOUND", ...}
//
// Threads: Handle runs on the admin socket's thread; it calls the coordinator (its lock held only
// inside those calls) and writes nothing to the client itself.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/removed_keys.h"

namespace tunnelmesh {

inline constexpr char kAdminSocketName[] = "admin.sock";
// Requests are small; anything longer is not one of ours.
inline constexpr size_t kMaxAdminRequest = 4096;

class AdminRequests {
 public:
  // `coordinator` and `removed` must outlive this.
  AdminRequests(Coordinator* coordinator, RemovedKeys* removed,
                std::function<absl::Time()> now = nullptr)
      : coordinator_(coordinator), removed_(removed), now_(std::move(now)) {}

  // One request line (without its newline) -> one response (a JSON object, no newline).
  std::string Handle(std::string_view request);

 private:
  absl::Time Now() const { return now_ ? now_() : absl::Now(); }

  Coordinator* const coordinator_;
  RemovedKeys* const removed_;
  const std::function<absl::Time()> now_;
};

}  // namespace tunnelmesh
