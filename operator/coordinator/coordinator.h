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
// Each Mesh has its own random WireGuard preshared key (psk_store.h), created when the coordinator
// first sees the Mesh, made durable before any member is told it, and rolled over when the Mesh's
// spec.presharedKeyGeneration is raised: in three steps (accept the new key, use it, drop the old
// one) a grace period apart (Options::psk_rollover_step), so that members, which get each step
// within a second, are never two steps apart and every handshake keeps working. Rotating the join
// token changes neither the key nor any member's session.
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
//
// Preshared keys have their own mutex (psk_mu_, taken before mu_, never under it): it serializes
// SetMeshes and the rollover ticks (a thread of the coordinator's, every
// Options::psk_tick_interval) and is held while the keys are saved to the PresharedKeyStore, which
// may block; nothing else waits for it. A change of keys is saved first and only then reaches mu_
// and the members.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "lib/base/rate_limiter.h"
#include "lib/crypto/keys.h"
#include "lib/dns/mesh_zone.h"
#include "operator/api/mesh.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/challenges.h"
#include "operator/coordinator/member_writer.h"
#include "operator/coordinator/psk_store.h"
#include "operator/coordinator/refused_joins.h"
#include "operator/coordinator/removed_keys.h"
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
  uint32_t ssh = 0;
  bool operator==(const PathCounts&) const = default;
};

// A member's path to one of its peers, as its agent reported it
// (ReportEndpointsRequest.peer_paths).
struct PeerPathReport {
  PublicKey peer;
  coord::PathKind path = coord::PATH_KIND_NONE;
};

// A member's path to a peer changed between two of its reports (MeshPeer PathChanged Events).
struct PathChange {
  uint64_t seq = 0;  // Increasing across the coordinator: the operator's bookmark.
  std::string peer;  // The peer's member name.
  coord::PathKind from = coord::PATH_KIND_NONE;
  coord::PathKind to = coord::PATH_KIND_NONE;
  absl::Time at;
};

// What Coordinator::PathsOf returns for one member.
struct MemberPaths {
  // The first paths by peer name, at most the limit asked for, and how many peers there are.
  std::vector<std::pair<std::string, coord::PathKind>> first;
  size_t total = 0;
  // Changes after the bookmark asked for, oldest first, and whether some after it were no longer
  // kept (more than kKeptPathChanges since).
  std::vector<PathChange> changes;
  bool changes_lost = false;
};

// "none", "direct", "ssh", "relay": the words of MeshPeer status and Events.
const char* PathKindWord(coord::PathKind path);

// How many members a mesh has of one kind, and how many of them hold an open watch (metrics).
struct MemberCount {
  std::string mesh;
  coord::MemberKind kind = coord::MEMBER_KIND_EXTERNAL;
  size_t members = 0;
  size_t watching = 0;
  bool operator==(const MemberCount&) const = default;
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

// The audience of the projected ServiceAccount tokens agents join with (the chart mounts them).
inline constexpr char kServiceAccountTokenAudience[] = "tunnelmesh";

// What the API server says of a ServiceAccount token (Coordinator::Options::review_token).
struct ServiceAccountToken {
  std::string user;                    // "system:serviceaccount:NS:NAME"
  std::vector<std::string> audiences;  // The token's audiences the review accepted.
  std::string node;  // The Node of the pod the token is bound to; empty when not bound to one.
};

// What the API server says of a pod a member asks to attach (Coordinator::Options::lookup_pod).
struct PodFacts {
  std::string node;  // spec.nodeName
  std::string uid;   // metadata.uid
  std::map<std::string, std::string> labels;
  // The `tunnelmesh.io/mesh` annotation of the Pod, else of its namespace; "" when neither has it.
  std::string mesh_annotation;
  std::map<std::string, std::string> namespace_labels;
};

// The annotation by which a pod (or every pod of a namespace) opts in to a mesh.
inline constexpr char kPodMeshAnnotation[] = "tunnelmesh.io/mesh";

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
  std::atomic<uint64_t> hellos{0};
  // Registrations refused for a missing, stale or wrong proof of possession.
  std::atomic<uint64_t> refused_proofs{0};
  // Calls refused by a rate limit (Hello, Register, wrong tokens, reports, call-me-maybe).
  std::atomic<uint64_t> rate_limited{0};
  // New members the join token did not admit because the Mesh had spec.joinTokenMaxMembers.
  std::atomic<uint64_t> refused_token_cap{0};
  // Call-me-maybe endpoints dropped because the sender had not reported them.
  std::atomic<uint64_t> call_me_maybe_endpoints_dropped{0};
  // Pods attached (new or again) and detached, and attach requests refused (not opted in, not on
  // the caller's Node, bad input).
  std::atomic<uint64_t> pods_attached{0};
  std::atomic<uint64_t> pods_detached{0};
  std::atomic<uint64_t> pods_refused{0};
  // Members removed by ExpireIdle.
  std::atomic<uint64_t> expired_members{0};
  // Preshared-key rollover steps taken (each step of each mesh), and failed saves of the keys
  // (the change waits and is tried again on the next tick).
  std::atomic<uint64_t> psk_rollover_steps{0};
  std::atomic<uint64_t> psk_save_failures{0};
  // A member's live watch replaced by a new one (normally its own agent reconnecting), and the
  // episodes in which that happened so often that two agents must share the key (warned once per
  // episode; see Coordinator::kTakeoversBeforeWarning).
  std::atomic<uint64_t> watch_takeovers{0};
  std::atomic<uint64_t> duplicate_key_warnings{0};
  // Members removed and registrations refused because an admin removed their key
  // (`tunnelmesh-operator remove`, standalone).
  std::atomic<uint64_t> admin_removals{0};
  std::atomic<uint64_t> refused_removed_keys{0};
  MemberWriterCounters store;
  // Seconds from a delta's push to a member's queue until its Watch stream takes it to write.
  metrics::Histogram fanout_seconds{metrics::LatencyBuckets()};
};

class Coordinator {
 public:
  struct Options {
    // What members are told about the coordinator's other services.
    std::string stun_address;
    std::string relay_url;
    PublicKey relay_public_key;
    // The hash ("sha256:...") of the coordinator's CA: Hello's token proofs cover it.
    std::string ca_hash;
    uint32_t mtu = 1420;
    // Kubernetes mode: in-cluster agents may register with a ServiceAccount token instead of the
    // join token. `review_token` asks the API server (TokenReview for audience
    // kServiceAccountTokenAudience, cached and rate-limited: operator/kube/token_review.h) whose
    // token it is, for which audiences, and on which Node its pod runs. Only
    // `agent_service_account` ("system:serviceaccount:NS:NAME") with that audience is admitted,
    // and a member of kind Node only under the name of its token's Node. Called without the
    // coordinator's lock.
    std::function<absl::StatusOr<ServiceAccountToken>(const std::string& token)> review_token;
    std::string agent_service_account;
    // Kubernetes mode: members of kind Node must name an existing Node.
    std::function<bool(const std::string& node)> node_exists;
    // Kubernetes mode: reads a pod and its namespace (NOT_FOUND when the pod does not exist).
    // Set, only members of kind Node may host pods, and only pods the API server says run on
    // their Node and opted in; unset (standalone), a member is trusted for the pods it names.
    // Called without the coordinator's lock.
    std::function<absl::StatusOr<PodFacts>(const std::string& namespace_name,
                                           const std::string& pod_name)>
        lookup_pod;
    // Pod addresses are kept from other pods this long after a pod leaves (shorter than
    // `quarantine`: pods come and go by the hundred, and their names are short-lived in DNS).
    absl::Duration pod_quarantine = absl::Minutes(1);
    // Attach, detach and sync calls per hosting member.
    KeyedRateLimiter::Options pod_calls_per_member{.rate = 50, .burst = 400};
    // A member left or was evicted (its relay session is closed). Called under the coordinator's
    // lock: it must not block or call back.
    std::function<void(const PublicKey& member)> on_member_removed;
    // A member moved to another mesh (it registered in another Mesh, or its MeshPeer's spec.mesh
    // changed): its relay session, scoped to the old mesh, must be rescoped or closed. Called under
    // the coordinator's lock: it must not block or call back.
    std::function<void(const PublicKey& member)> on_member_moved;
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
    ChallengeBook::Options challenges;
    // Rate limits. Per source address: generous, since many CI runners may share one NAT address.
    KeyedRateLimiter::Options hellos_per_source{.rate = 100, .burst = 400};
    KeyedRateLimiter::Options registrations_per_source{.rate = 50, .burst = 200};
    // Wrong join tokens: a few mistakes, then one guess per 5 seconds per source.
    KeyedRateLimiter::Options wrong_tokens_per_source{.rate = 0.2, .burst = 10};
    // Per member. Agents report on change (coalesced) and call a peer at most once a second.
    KeyedRateLimiter::Options reports_per_member{.rate = 5, .burst = 20};
    KeyedRateLimiter::Options call_me_maybe_per_pair{.rate = 1, .burst = 4};
    // A member that left or expired keeps its addresses and name from other keys this long (its
    // own key gets them back): peers and caches that still know the old name or address must not
    // reach a newcomer there.
    absl::Duration quarantine = absl::Hours(24);
    // At most this many quarantined addresses are kept (the oldest go first), in memory and in the
    // store (MemberStore::SaveQuarantine, written behind like member records, so that a restart
    // keeps the quarantine).
    size_t max_quarantined = kMaxQuarantined;
    // ExpireIdle removes members of an agent that has not been seen (no watch, no call) for this
    // long; zero: never. Members with static endpoints (admin-made) never expire.
    absl::Duration member_expiry = absl::ZeroDuration();
    // Where the meshes' preshared keys are kept; null keeps them in memory only (tests). Must
    // outlive the coordinator.
    PresharedKeyStore* psk_store = nullptr;
    // Time between the steps of a preshared-key rollover: long enough for every member to get a
    // step before the next one (map updates take well under a second).
    absl::Duration psk_rollover_step = absl::Seconds(15);
    // How often the coordinator's rollover thread looks for a step that is due; zero starts no
    // thread (tests call AdvancePresharedKeys).
    absl::Duration psk_tick_interval = absl::Seconds(1);
    // The wall clock of rollovers and of watch takeovers (tests inject one); null: absl::Now.
    std::function<absl::Time()> now;
    // Standalone: keys an admin removed (`tunnelmesh-operator remove`), refused at Register until
    // re-admitted. Null: none (Kubernetes mode, where deleting a MeshPeer evicts). Must outlive the
    // coordinator; its lock is taken under mu_.
    RemovedKeys* removed_keys = nullptr;
  };

  // A watch taken over this many times within kTakeoverEpisode is two agents with one key.
  static constexpr int kTakeoversBeforeWarning = 3;
  static constexpr absl::Duration kTakeoverEpisode = absl::Seconds(60);

  // Takes the store's records as the initial member map; from then on the store is written only
  // by the coordinator's MemberWriter thread. `store` must outlive the coordinator.
  Coordinator(MemberStore* store, Options options);
  // Lets queued store writes finish (bounded by Options::writer.flush_on_stop).
  ~Coordinator();

  // Replaces the set of meshes (from the manifests). Watchers of a changed mesh get its settings.
  // A Mesh seen for the first time gets a random preshared key, a raised
  // spec.presharedKeyGeneration starts a rollover; the keys are saved before they are served (a
  // Mesh whose first key cannot be saved is not served yet: the next tick tries again). A new
  // join token takes effect at once for new registrations and changes nothing for members.
  void SetMeshes(std::vector<MeshSpec> meshes) ABSL_LOCKS_EXCLUDED(psk_mu_, mu_);
  // Takes the preshared-key rollover steps that are due (and retries failed saves). Called by the
  // coordinator's own thread every Options::psk_tick_interval, or by tests.
  void AdvancePresharedKeys() ABSL_LOCKS_EXCLUDED(psk_mu_, mu_);
  // Where a mesh's preshared key is (tests, status); nullopt for a mesh without one.
  std::optional<PresharedKeyStep> PresharedKeyStepOf(const std::string& mesh) const
      ABSL_LOCKS_EXCLUDED(psk_mu_);

  // A fresh challenge for Register and the token proofs (proto/coordinator.proto, Hello).
  // `source` is the caller's address, for rate limits.
  [[nodiscard]] absl::StatusOr<coord::HelloResponse> Hello(const coord::HelloRequest& request,
                                                           const std::string& source)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Admits a member that proves it holds its key (a challenge from Hello and its proof).
  [[nodiscard]] absl::StatusOr<coord::RegisterResponse> Register(
      const coord::RegisterRequest& request, const std::string& source) ABSL_LOCKS_EXCLUDED(mu_);
  // Maps "Bearer TOKEN" to the member it was issued to.
  [[nodiscard]] absl::StatusOr<PublicKey> Authenticate(std::string_view authorization) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The gRPC stream of `subscription` ended (the member's agent stopped or lost its connection):
  // unless a newer watch replaced it, the member's peers learn that it went offline (Presence in
  // their maps). Called by the Watch reactor when gRPC is done with the stream.
  void WatchEnded(const PublicKey& member, const Subscription* subscription)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Starts a watch: the returned subscription holds the full map first. A member's previous watch
  // is cancelled; a live one ends with ABORTED saying another agent took it over (from `source`,
  // the caller's address and port), and takeovers that keep coming are warned about (see
  // WatchTakenOverLocked in coordinator_admin.cc).
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Subscription>> Watch(const PublicKey& member,
                                                                    const std::string& source = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // `peer_paths`: at most kMaxPeerPaths; keys that are not members of the member's mesh are
  // skipped (a peer removed a moment ago).
  [[nodiscard]] absl::Status ReportEndpoints(const PublicKey& member,
                                             const std::vector<std::string>& endpoints,
                                             PathCounts paths = {},
                                             const std::vector<PeerPathReport>& peer_paths = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  // A member's reported paths (the first `limit` by peer name) and its path changes after `after`
  // (coordinator_paths.cc). Empty for members without a report.
  MemberPaths PathsOf(const PublicKey& member, size_t limit, uint64_t after) const
      ABSL_LOCKS_EXCLUDED(mu_);
  static constexpr size_t kMaxPeerPaths = 1024;
  // Path changes kept per member for PathsOf (older ones are counted as lost).
  static constexpr size_t kKeptPathChanges = 32;
  [[nodiscard]] absl::Status CallMeMaybe(const PublicKey& from, const PublicKey& to,
                                         const std::vector<std::string>& endpoints)
      ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::Status Leave(const PublicKey& member) ABSL_LOCKS_EXCLUDED(mu_);
  // Pods as members (coordinator_pods.cc): `host` attaches a pod it runs (again: the same
  // addresses), detaches one, or states the whole set it hosts (the others are detached). Like
  // Register, an attach answers once the pod's record is durable.
  [[nodiscard]] absl::StatusOr<coord::AttachPodResponse> AttachPod(
      const PublicKey& host, const coord::AttachPodRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::StatusOr<coord::DetachPodResponse> DetachPod(
      const PublicKey& host, const coord::DetachPodRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  [[nodiscard]] absl::StatusOr<coord::SyncPodsResponse> SyncPods(
      const PublicKey& host, const coord::SyncPodsRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  bool IsMember(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);
  // Removes the members not seen for Options::member_expiry (see there); returns how many.
  size_t ExpireIdle(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // The mesh `key` is a member of; nullopt when it is none's. The relay scopes sessions with it.
  std::optional<std::string> MeshOf(const PublicKey& key) const ABSL_LOCKS_EXCLUDED(mu_);

  // Kubernetes mode, from MeshPeer objects. Admit brings the coordinator in line with a record
  // that exists at its source (restart, a MeshPeer pre-created by an admin, a label edit): it keeps
  // valid addresses, allocates missing ones (writing them through the store) and tells the mesh.
  // ABORTED for a member it removed whose record's deletion is still queued (a stale read), and
  // FAILED_PRECONDITION for a pod member it does not hold.
  [[nodiscard]] absl::Status Admit(MemberRecord record) ABSL_LOCKS_EXCLUDED(mu_);
  // The member's record is gone at its source (MeshPeer deleted): drop it from every map and end
  // its watch with PERMISSION_DENIED naming `why`, so that its agent stops.
  void Evict(const PublicKey& member, const std::string& why) ABSL_LOCKS_EXCLUDED(mu_);
  // Standalone admin removal (`tunnelmesh-operator remove`; the key must be in
  // Options::removed_keys first, so that it cannot register again meanwhile): removed like a
  // member that left (addresses quarantined, deleted from members.json, its mesh told), and its
  // watch ends with PERMISSION_DENIED naming the admin and the command that re-admits it.
  // NotFound when the key is no member's. Returns the removed record.
  [[nodiscard]] absl::StatusOr<MemberRecord> RemoveByAdmin(const PublicKey& member)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A refused Register, for the admin's list and the log (refused_joins.h). `peer` is the
  // caller's address and port, `source_key` what per-source limits count it under.
  void NoteRefusedJoin(const coord::RegisterRequest& request, const std::string& peer,
                       const std::string& source_key, const absl::Status& refusal);
  RefusedJoins& refused_joins() { return refused_joins_; }
  std::vector<PublicKey> MembersOf(const std::string& mesh) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<MemberStatus> Members() const ABSL_LOCKS_EXCLUDED(mu_);
  // Members by mesh and kind (sorted by both), counted under a read lock without copying records.
  std::vector<MemberCount> MemberCounts() const ABSL_LOCKS_EXCLUDED(mu_);
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
  // The quarantined addresses now (tests, status).
  std::vector<QuarantineEntry> QuarantineEntries() const ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until every queued store write finished (tests, benchmarks). False on timeout.
  bool FlushStore(absl::Duration timeout) { return writer_.Flush(timeout); }

 private:
  struct MeshState {
    MeshSpec spec;
    // What members use and, during a rollover, also accept (see PresharedKeyStep).
    SecretKey preshared_key;
    std::optional<SecretKey> accepted_preshared_key;
    uint64_t preshared_key_generation = 0;
  };
  struct Live {
    std::vector<std::string> endpoints;
    // BLAKE2s of the session token (the key of sessions_).
    std::string session_hash;
    std::weak_ptr<Subscription> subscription;
    absl::Time last_seen = absl::InfinitePast();
    PathCounts paths;
    // The path to each peer by peer name, as last reported, and the latest changes of those.
    std::map<std::string, coord::PathKind> peer_paths;
    std::deque<PathChange> path_changes;  // at most kKeptPathChanges, oldest first
    uint64_t dropped_change_seq = 0;      // the newest change dropped from path_changes
    // Where the current watch came from, and how often live watches were taken over lately.
    std::string watch_source;
    int takeovers = 0;
    absl::Time last_takeover = absl::InfinitePast();
    bool takeover_warned = false;
  };

  class Locked;

  // Replaces the member's per-peer paths with `reported` and logs the changes
  // (coordinator_paths.cc).
  void SetPeerPathsLocked(const MemberRecord& record, Live& live,
                          const std::vector<PeerPathReport>& reported)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MeshState* MeshFor(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `key`'s agent holds an open watch, and the Presence its peers are told.
  bool OnlineLocked(const PublicKey& key) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  coord::Presence PresenceOf(const PublicKey& key) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Tells the other watchers of `record`'s mesh its Presence now.
  void FanOutPresenceLocked(const MemberRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The Mesh a registration joins, and whether the join token must still be checked against it.
  // Without `mesh` in the request: a key the coordinator knows goes back to its own mesh, and a new
  // key to the one mesh whose join token it presents (ServiceAccount joins: the only mesh). The
  // errors name the meshes only to a caller whose token matched them (or who is a ServiceAccount).
  absl::StatusOr<const MeshState*> MeshToJoinLocked(const coord::RegisterRequest& request,
                                                    const PublicKey& key, bool service_account)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Now() const { return options_.now ? options_.now() : absl::Now(); }
  // Brings the preshared keys in line with desired_ (new meshes, rollovers started or due), saves
  // them, then serves desired_ with them. `meshes_changed`: desired_ was just replaced.
  void ReconcileMeshesLocked(bool meshes_changed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(psk_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Installs desired_ with the keys of psks_ as the served meshes and tells their watchers.
  void InstallMeshes(bool meshes_changed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(psk_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
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
  // A free address of `cidr` for `key`: one quarantined for this key first, else the lowest that
  // no member holds and no other key's quarantine keeps.
  absl::StatusOr<IpAddress> Allocate(const Prefix& cidr, const std::string& mesh,
                                     const PublicKey& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  // Removes a pod member (detached, its host gone or moved): its addresses are quarantined for
  // Options::pod_quarantine, its record deleted, and its host's peers get the host without it.
  void RemovePodLocked(const PublicKey& pod) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes every pod `host` hosts.
  void RemovePodsOfLocked(const PublicKey& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends the mesh the host's Peer (its allowed_ips list its pods) with `pod` upserted or
  // `removed_pod` removed (either may be null); the host itself gets only the pod's change.
  void FanOutHostLocked(const PublicKey& host, const MemberRecord* pod,
                        const PublicKey* removed_pod) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // AttachPod without the per-member rate limit (SyncPods counts once for all its pods).
  absl::StatusOr<coord::AttachPodResponse> AttachPodUnlimited(
      const PublicKey& host, const coord::AttachPodRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  // AttachPod after the API server was asked (`facts` null outside Kubernetes).
  absl::StatusOr<coord::AttachPodResponse> AttachPodChecked(const PublicKey& host,
                                                            const coord::AttachPodRequest& request,
                                                            const PodFacts* facts)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The policy engine's view of a record (its host's name for a pod).
  policy::Member PolicyMemberLocked(const MemberRecord& record) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Sends each watching member whose rule set changed a MapUpdate with it (every mesh), then
  // SendExitConfigsLocked.
  void SendFiltersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The member's exit-peer role (coordinator_exit.cc): the exits it may use, in its order, those
  // refused and why, and its exit clients when it is one.
  coord::ExitConfig ExitConfigLocked(const MemberRecord& record) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Sends each watching member whose ExitConfig changed since it was last computed a MapUpdate
  // with it. Only members that use or offer an exit, or did, are computed.
  void SendExitConfigsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A full map carried `config` to the member.
  void NoteExitSentLocked(const PublicKey& member, const coord::ExitConfig& config)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After SetMeshes: engines for new meshes (with their members and policies), default actions,
  // engines of removed meshes dropped. Watchers of changed meshes get full maps anyway.
  void SyncEnginesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<PeerPolicySpec> PoliciesOf(const std::string& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The member's rule set for its full map (the mesh default when it enforces nothing).
  coord::FilterRules FilterFor(const MemberRecord& record, const MeshState& mesh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps a departing member's addresses and name from other keys for Options::quarantine (also
  // the addresses a member that moves to another mesh leaves behind), and queues the quarantine's
  // write to the store.
  void QuarantineLocked(const MemberRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The quarantine (IP -> entry) as the store keeps it.
  std::vector<QuarantineEntry> QuarantineSnapshotLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A member's mesh changed from `old_mesh`: old addresses quarantined, the relay told.
  void MovedLocked(const MemberRecord& old) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a member that left or expired: quarantined, deleted from the store, its mesh told.
  void RemoveLocked(const PublicKey& member, absl::Status reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What ends a live watch that another Watch of the member replaces: counts the takeover and warns
  // (once per episode) when they keep coming, which is two agents sharing one key.
  absl::Status WatchTakenOverLocked(const PublicKey& member, Live& live, const std::string& source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Register's refusal of a key an admin removed; OK for any other key.
  absl::Status RemovedByAdminLocked(const PublicKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the member's session and tells its mesh it is gone.
  void DropLocked(const PublicKey& member, const std::string& mesh, absl::Status reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Quarantined {
    PublicKey key;
    std::string name;
    absl::Time until;
  };

  const Options options_;
  CoordinatorCounters counters_;
  // Admission state with locks of their own (never taken under mu_ and never the other way).
  ChallengeBook challenges_;
  KeyedRateLimiter hello_limit_;
  KeyedRateLimiter register_limit_;
  KeyedRateLimiter wrong_token_limit_;
  KeyedRateLimiter report_limit_;
  KeyedRateLimiter call_me_maybe_limit_;
  KeyedRateLimiter pod_limit_;
  RefusedJoins refused_joins_;
  const absl::Time started_ = absl::Now();
  // Preshared keys and the meshes they are for (see the header comment); taken before mu_.
  mutable absl::Mutex psk_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // The meshes of the last SetMeshes; served once each has a saved key.
  std::vector<MeshSpec> desired_ ABSL_GUARDED_BY(psk_mu_);
  // The saved keys (every mesh ever seen: a Mesh that comes back keeps its key) and when each
  // mesh's current rollover step began (a restart starts the step's grace period again).
  PresharedKeyRecords psks_ ABSL_GUARDED_BY(psk_mu_);
  std::map<std::string, absl::Time> step_since_ ABSL_GUARDED_BY(psk_mu_);
  bool psks_loaded_ ABSL_GUARDED_BY(psk_mu_) = false;
  absl::Notification stop_ticker_;
  std::thread psk_ticker_;
  mutable absl::Mutex mu_;
  // The authoritative member map; the store follows it through writer_.
  std::map<PublicKey, MemberRecord> members_ ABSL_GUARDED_BY(mu_);
  // Host -> the pod members it hosts (records in members_ with `pod` set).
  std::map<PublicKey, std::set<PublicKey>> pods_by_host_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, MeshState> meshes_ ABSL_GUARDED_BY(mu_);
  std::map<PublicKey, Live> live_ ABSL_GUARDED_BY(mu_);
  uint64_t path_change_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // BLAKE2s(session token) -> member: a lookup by hash leaks nothing about the tokens.
  std::map<std::string, PublicKey> sessions_ ABSL_GUARDED_BY(mu_);
  // Addresses of members that left or expired, and whose they were (Options::quarantine).
  std::map<IpAddress, Quarantined> quarantine_ ABSL_GUARDED_BY(mu_);
  std::vector<PeerPolicySpec> policies_ ABSL_GUARDED_BY(mu_);
  // Mesh name -> its incremental policy compiler (members by name).
  std::map<std::string, policy::Engine> engines_ ABSL_GUARDED_BY(mu_);
  // Member -> its ExitConfig (serialized) as last sent, when that was not empty (absent: empty).
  std::map<PublicKey, std::string> exit_configs_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Subscribers to wake once mu_ is released (see Locked).
  std::vector<std::shared_ptr<Subscription>> to_wake_ ABSL_GUARDED_BY(mu_);
  // Last member: its destructor flushes while the rest is still alive.
  MemberWriter writer_;
};

}  // namespace tunnelmesh
