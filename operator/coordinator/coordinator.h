// The coordinator's core, independent of gRPC transport: admits members with a join token,
// allocates sticky mesh IPs (persisted through a MemberStore), keeps each member's endpoint
// candidates, and fans changes out to every watching member as deltas (a full map only when a
// watch starts, or when a slow watcher's backlog collapsed). Call-me-maybe signals are forwarded
// through the same streams. PeerPolicies are compiled per mesh into per-member packet-filter rule
// sets (operator/policy/engine.h): a full map carries the member's rule set; after a join, a leave,
// a label or policy change, only the members whose rule set bytes changed get a MapUpdate with
// `filter` (counted in filter_updates_sent). A Mesh settings change (its defaultAction included)
// sends its watchers full maps, which carry the new rule sets. The compile runs under mu_: it is
// bounded by the mesh's members and policies and does no I/O (coordinator_filter.cc).
//
// Threads and locks: one mutex (mu_) guards the in-memory state, which is authoritative: the
// member map, sessions, live endpoints, meshes. gRPC handler threads, the relay's I/O thread and
// the Kubernetes reconcilers call in concurrently. Nothing blocks on I/O under mu_: member records
// reach the MemberStore through a MemberWriter (write-behind on its own thread, latest record per
// key wins), and subscribers are woken after mu_ is released.
//
// Register waits (without mu_, up to Options::register_write_deadline) for its own record to be
// durable before it answers: a member is told its addresses only once a coordinator restart would
// hand them back (members.json, or the MeshPeer's status.meshIPs in Kubernetes), so two members can
// never be told the same address across a restart, and `kubectl get meshpeers` shows every member
// that was told it is registered. A slow store therefore delays the registrations that write (a
// new member, a rename, new labels) and nothing else: re-registering unchanged, Authenticate,
// IsMember, ReportEndpoints, CallMeMaybe and Watch never wait for it. Admit, Leave and Evict do not
// wait: their records already changed at the source, or the member is going away; failed writes
// are retried by the writer (see member_writer.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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
#include "lib/dns/mesh_zone.h"
#include "operator/api/mesh.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/member_writer.h"
#include "operator/coordinator/state_store.h"
#include "operator/coordinator/subscription.h"
#include "operator/policy/engine.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

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
  // Watchers whose backlog collapsed into one full map (see subscription.h).
  std::atomic<uint64_t> watch_collapses{0};
  // MapUpdates carrying a changed rule set to one member (deltas; full maps always carry one).
  std::atomic<uint64_t> filter_updates_sent{0};
  // Rule sets the policy engines rebuilt (whether or not their bytes changed).
  std::atomic<uint64_t> filter_recompiles{0};
  std::atomic<uint64_t> explain_requests{0};
  MemberWriterCounters store;
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
    // The state's version moved (a member, a mesh or a setting changed; see DnsZones). Called
    // after the lock is released, on the thread that made the change: it must return quickly
    // (e.g. wake another thread) and may call back.
    std::function<void()> on_change;
    // How long Register waits for its member's record to be durable before it answers
    // UNAVAILABLE (the agent retries; the write goes on in the background).
    absl::Duration register_write_deadline = absl::Seconds(10);
    // Deltas a watcher may fall behind before its backlog collapses into one full map.
    size_t max_pending_updates = 256;
    MemberWriter::Options writer;
  };

  // Takes the store's records as the initial member map; from then on the store is written only
  // by the coordinator's MemberWriter thread. `store` must outlive the coordinator.
  Coordinator(MemberStore* store, Options options);
  // Lets queued store writes finish (bounded by Options::writer.flush_on_stop).
  ~Coordinator();

  // Replaces the set of meshes (from the manifests). Watchers of a changed mesh get its settings.
  void SetMeshes(std::vector<MeshSpec> meshes) ABSL_LOCKS_EXCLUDED(mu_);

  [[nodiscard]] absl::StatusOr<coord::RegisterResponse> Register(
      const coord::RegisterRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  // Maps "Bearer TOKEN" to the member it was issued to.
  [[nodiscard]] absl::StatusOr<PublicKey> Authenticate(std::string_view authorization) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Starts a watch: the returned subscription holds the full map first. A member's previous watch
  // is cancelled.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Subscription>> Watch(const PublicKey& member)
      ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::Status ReportEndpoints(const PublicKey& member,
                                             const std::vector<std::string>& endpoints,
                                             PathCounts paths = {}) ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::Status CallMeMaybe(const PublicKey& from, const PublicKey& to,
                                         const std::vector<std::string>& endpoints)
      ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::Status Leave(const PublicKey& member) ABSL_LOCKS_EXCLUDED(mu_);
  bool IsMember(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);
  // The mesh `key` is a member of; nullopt when it is none's. The relay scopes sessions with it.
  std::optional<std::string> MeshOf(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);

  // Kubernetes mode, from MeshPeer objects. Admit brings the coordinator in line with a record
  // that exists at its source (restart, a MeshPeer pre-created by an admin, a label edit): it keeps
  // valid addresses, allocates missing ones (writing them through the store) and tells the mesh.
  [[nodiscard]] absl::Status Admit(MemberRecord record) ABSL_LOCKS_EXCLUDED(mu_);
  // The member's record is gone at its source (MeshPeer deleted): drop it from every map and end
  // its watch with PERMISSION_DENIED naming `why`, so that its agent stops.
  void Evict(const PublicKey& member, const std::string& why) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<PublicKey> MembersOf(const std::string& mesh) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<MemberStatus> Members() const ABSL_LOCKS_EXCLUDED(mu_);
  // Replaces the validated PeerPolicy specs (of every mesh) and recompiles what they change;
  // members whose rule sets changed get them. A policy naming a Mesh the coordinator does not
  // have is kept and applies once that Mesh appears.
  void SetPolicies(std::vector<PeerPolicySpec> policies) ABSL_LOCKS_EXCLUDED(mu_);
  size_t policy_count() const ABSL_LOCKS_EXCLUDED(mu_);
  // What a policy selects and compiled to (for its status); nullopt when no Mesh of this
  // coordinator holds a policy of that name.
  std::optional<policy::PolicyStats> PolicyStatsFor(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The rule set `member` enforces now (tests, debugging); nullopt for a static or unknown member.
  std::optional<coord::FilterRules> FilterRulesFor(const PublicKey& member) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // What the filter of the member enforcing a flow decides for it, in `caller`'s mesh. Source and
  // destination are member names or addresses; the destination must be a member's address. Errors
  // name the unknown member.
  [[nodiscard]] absl::StatusOr<coord::ExplainResponse> Explain(const PublicKey& caller,
                                                               const coord::ExplainRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Each mesh's DNS zone as the central DNS server serves it: the mesh's settings, the state's
  // version and every member (static ones too) with its aliases and addresses, by name.
  std::vector<MeshZoneInput> DnsZones() const ABSL_LOCKS_EXCLUDED(mu_);

  CoordinatorCounters& counters() { return counters_; }
  size_t member_count() const ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until every queued store write finished (tests, benchmarks). False on timeout.
  bool FlushStore(absl::Duration timeout) { return writer_.Flush(timeout); }

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

  class Locked;

  const MeshState* MeshFor(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  coord::Settings SettingsFor(const MeshState& mesh) const;
  coord::Peer PeerOf(const MemberRecord& record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The full map for `member` (settings and every other member of its mesh).
  coord::MapUpdate FullMapFor(const PublicKey& member, const MeshState& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rebuilds a collapsed subscription's queue as one full map (Subscription::Options::refill).
  void Refill(const PublicKey& member, Subscription* subscription) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues `update` for a subscriber; it is woken once mu_ is released.
  void PushLocked(const std::shared_ptr<Subscription>& subscription, coord::MapUpdate update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelLocked(const std::shared_ptr<Subscription>& subscription, absl::Status reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `update` to every watcher of `mesh` except `except`.
  void FanOut(const std::string& mesh, const PublicKey* except, const coord::MapUpdate& update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<IpAddress> Allocate(const Prefix& cidr, const std::string& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string UniqueName(const std::string& requested, const PublicKey& key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps the member's addresses that lie in the mesh's ranges and are not taken by another
  // member; allocates the missing families.
  absl::StatusOr<std::vector<IpAddress>> AddressesFor(const MeshState& mesh,
                                                      const MemberRecord& record) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings the mesh's policy engine in line with a member record that changed (`old` null: new;
  // `now` null: gone) and sends rule sets to the members whose rules changed.
  void SyncFilterLocked(const MemberRecord* old, const MemberRecord* now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends each watching member whose rule set changed a MapUpdate with it (every mesh).
  void SendFiltersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After SetMeshes: engines for new meshes (with their members and policies), default actions,
  // engines of removed meshes dropped. Watchers of changed meshes get full maps anyway.
  void SyncEnginesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<PeerPolicySpec> PoliciesOf(const std::string& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The member's rule set for its full map (the mesh default when it enforces nothing).
  coord::FilterRules FilterFor(const MemberRecord& record, const MeshState& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the member's session and tells its mesh it is gone.
  void DropLocked(const PublicKey& member, const std::string& mesh, absl::Status reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  CoordinatorCounters counters_;
  mutable absl::Mutex mu_;
  // The authoritative member map; the store follows it through writer_.
  std::map<PublicKey, MemberRecord> members_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, MeshState> meshes_ ABSL_GUARDED_BY(mu_);
  std::map<PublicKey, Live> live_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, PublicKey> sessions_ ABSL_GUARDED_BY(mu_);
  std::vector<PeerPolicySpec> policies_ ABSL_GUARDED_BY(mu_);
  // Mesh name -> its incremental policy compiler (members by name).
  std::map<std::string, policy::Engine> engines_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Subscribers to wake once mu_ is released (see Locked).
  std::vector<std::shared_ptr<Subscription>> to_wake_ ABSL_GUARDED_BY(mu_);
  // Last member: its destructor flushes while the rest is still alive.
  MemberWriter writer_;
};

}  // namespace tunnelmesh
