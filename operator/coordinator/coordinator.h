// The coordinator's core, independent of gRPC transport: admits members with a join token,
// allocates sticky mesh IPs (persisted through StateStore), keeps each member's endpoint
// candidates, and fans changes out to every watching member as deltas (a full map only when a
// watch starts). Call-me-maybe signals are forwarded through the same streams.
//
// Thread-safe: one mutex guards all state; gRPC handler threads call in concurrently.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "operator/api/mesh.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/state_store.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

// A member's stream of map updates. Thread-safe.
class Subscription {
 public:
  // Waits up to `timeout` for the next update. False on timeout or once cancelled (check
  // cancelled()).
  bool Next(coord::MapUpdate* out, absl::Duration timeout);
  void Push(coord::MapUpdate update);
  // Ends the stream; `reason` (OK for a plain end) is what the member is told.
  void Cancel(absl::Status reason = absl::OkStatus());
  bool cancelled() const;
  absl::Status reason() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<coord::MapUpdate> queue_;
  bool cancelled_ = false;
  absl::Status reason_;
};

// What the coordinator knows of a member right now, for status reporting.
// How many peers a member reaches directly and through the relay, as it reported last.
struct PathCounts {
  uint32_t direct = 0;
  uint32_t relayed = 0;
  bool operator==(const PathCounts&) const = default;
};

struct MemberStatus {
  MemberRecord record;
  bool connected = false;  // It holds an open watch.
  std::vector<std::string> endpoints;
  PathCounts paths;
  absl::Time last_seen = absl::InfinitePast();
};

// The label a member of kind Node carries with its Node's name (Node deletion removes it).
inline constexpr char kNodeLabel[] = "tunnelmesh.io/node";

struct CoordinatorCounters {
  std::atomic<uint64_t> registrations{0};
  std::atomic<uint64_t> rejected_tokens{0};
  std::atomic<uint64_t> malformed_requests{0};
  std::atomic<uint64_t> unauthenticated_calls{0};
  std::atomic<uint64_t> updates_sent{0};
};

class Coordinator {
 public:
  struct Options {
    // What members are told about the coordinator's other services.
    std::string stun_address;
    std::string relay_url;
    PublicKey relay_public_key;
    uint32_t mtu = 1420;
    // Kubernetes mode: in-cluster agents may register with a ServiceAccount token instead of the
    // join token. `review_token` asks the API server (TokenReview) whose token it is and returns
    // the user name; only `agent_service_account` ("system:serviceaccount:NS:NAME") is admitted.
    // Called without the coordinator's lock.
    std::function<absl::StatusOr<std::string>(const std::string& token)> review_token;
    std::string agent_service_account;
    // Kubernetes mode: members of kind Node must name an existing Node.
    std::function<bool(const std::string& node)> node_exists;
    // A member left or was evicted (its relay session is closed). Called under the coordinator's
    // lock: it must not block or call back.
    std::function<void(const PublicKey& member)> on_member_removed;
  };

  Coordinator(MemberStore* store, Options options);

  // Replaces the set of meshes (from the manifests). Watchers of a changed mesh get its settings.
  void SetMeshes(std::vector<MeshSpec> meshes);

  absl::StatusOr<coord::RegisterResponse> Register(const coord::RegisterRequest& request);
  // Maps "Bearer TOKEN" to the member it was issued to.
  absl::StatusOr<PublicKey> Authenticate(std::string_view authorization) const;
  // Starts a watch: the returned subscription holds the full map first. A member's previous watch
  // is cancelled.
  absl::StatusOr<std::shared_ptr<Subscription>> Watch(const PublicKey& member);
  absl::Status ReportEndpoints(const PublicKey& member, const std::vector<std::string>& endpoints,
                               PathCounts paths = {});
  absl::Status CallMeMaybe(const PublicKey& from, const PublicKey& to,
                           const std::vector<std::string>& endpoints);
  absl::Status Leave(const PublicKey& member);
  bool IsMember(const PublicKey& key) const;

  // Kubernetes mode, from MeshPeer objects. Admit brings the coordinator in line with a record
  // that exists at its source (restart, a MeshPeer pre-created by an admin, a label edit): it keeps
  // valid addresses, allocates missing ones (writing them through the store) and tells the mesh.
  absl::Status Admit(MemberRecord record);
  // The member's record is gone at its source (MeshPeer deleted): drop it from every map and end
  // its watch with PERMISSION_DENIED naming `why`, so that its agent stops.
  void Evict(const PublicKey& member, const std::string& why);
  std::vector<PublicKey> MembersOf(const std::string& mesh) const;
  std::vector<MemberStatus> Members() const;
  // Validated PeerPolicy specs, kept for the packet filter's compiler.
  void SetPolicies(std::vector<PeerPolicySpec> policies);
  size_t policy_count() const;

  CoordinatorCounters& counters() { return counters_; }
  size_t member_count() const;

 private:
  struct MeshState {
    MeshSpec spec;
    SecretKey preshared_key;
  };
  struct Live {
    std::vector<std::string> endpoints;
    std::string session_token;
    std::weak_ptr<Subscription> subscription;
    absl::Time last_seen = absl::InfinitePast();
    PathCounts paths;
  };

  const MeshState* MeshFor(const std::string& name) const;  // Requires mu_.
  coord::Settings SettingsFor(const MeshState& mesh) const;
  coord::Peer PeerOf(const MemberRecord& record) const;  // Requires mu_.
  // Sends `update` to every watcher of `mesh` except `except`. Requires mu_.
  void FanOut(const std::string& mesh, const PublicKey* except, const coord::MapUpdate& update);
  absl::StatusOr<IpAddress> Allocate(const Prefix& cidr, const std::string& mesh) const;
  std::string UniqueName(const std::string& requested, const PublicKey& key) const;
  // Keeps the member's addresses that lie in the mesh's ranges and are not taken by another
  // member; allocates the missing families. Requires mu_.
  absl::StatusOr<std::vector<IpAddress>> AddressesFor(const MeshState& mesh,
                                                      const MemberRecord& record) const;
  // Ends the member's session and tells its mesh it is gone. Requires mu_.
  void DropLocked(const PublicKey& member, const std::string& mesh, absl::Status reason);

  MemberStore* const store_;
  const Options options_;
  CoordinatorCounters counters_;
  mutable std::mutex mu_;
  std::map<std::string, MeshState> meshes_;
  std::map<PublicKey, Live> live_;
  std::map<std::string, PublicKey> sessions_;
  std::vector<PeerPolicySpec> policies_;
  uint64_t version_ = 0;
};

}  // namespace tunnelmesh
