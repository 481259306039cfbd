// FakeApi: an in-memory Kubernetes API server behind kube::Api, for unit tests of reconcilers,
// informers, leader election, events and the member store. Never used by an end-to-end test
// (those run a real kube-apiserver, e2e/cluster/).
//
// What it models, as the API server does it:
//   - objects by resource, namespace and name; one resourceVersion counter for every write (as
//     etcd's revision), stored in metadata.resourceVersion; uid and creationTimestamp on create;
//     metadata.generateName when the name is empty;
//   - 404 (kNotFound) for a missing object, 409 AlreadyExists (kAlreadyExists) on create, 409
//     Conflict (kAborted) on an update with a stale metadata.resourceVersion or a delete with a
//     wrong uid precondition;
//   - metadata.generation: 1 on create, bumped when anything outside metadata and status changes;
//   - the status subresource of the resources that have one (Mesh, MeshPeer, PeerPolicy, Node):
//     Update and plain patches keep the status, UpdateStatus and status patches change only it;
//   - merge patches (RFC 7386; strategic merge is treated as a merge patch) and JSON patches
//     (RFC 6902; a failed "test" is 422, kInvalidArgument);
//   - finalizers: Delete of an object that has some only sets metadata.deletionTimestamp; the
//     object goes when a write leaves it without finalizers;
//   - watch: ADDED, MODIFIED and DELETED from any resourceVersion still in the history (all
//     current objects as ADDED first when it is empty or "0"); kOutOfRange (410) from one that
//     Compact() dropped; equality label selectors ("a=b,c=d") on list and watch.
// Test controls: injected errors (by verb and resource, or any rule), latency per call, answers
// for create-only resources (TokenReview), a log of calls, Compact(), EndWatches().
//
// Thread-safe: every method may be called from any thread; Watch blocks its caller and delivers
// events without holding the fake's lock.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "operator/kube/api.h"

namespace tunnelmesh::kube::testing {

class FakeApi final : public Api {
 public:
  // One call as the fake saw it. `verb`: get list create update updatestatus patch delete watch.
  struct Call {
    std::string verb;
    std::string resource;  // plural
    std::string ns;
    std::string name;
    bool status_subresource = false;
  };
  using ErrorRule = std::function<absl::Status(const Call&)>;
  using CreateHandler = std::function<absl::StatusOr<nlohmann::json>(const nlohmann::json&)>;

  FakeApi() = default;
  FakeApi(const FakeApi&) = delete;
  FakeApi& operator=(const FakeApi&) = delete;

  [[nodiscard]] absl::StatusOr<nlohmann::json> Get(const Resource& resource, const std::string& ns,
                                                   const std::string& name) override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> List(
      const Resource& resource, const std::string& ns, const std::string& label_selector = "",
      const std::string& field_selector = "") override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> Create(const Resource& resource,
                                                      const std::string& ns,
                                                      const nlohmann::json& object) override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> Update(const Resource& resource,
                                                      const std::string& ns,
                                                      const nlohmann::json& object) override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> UpdateStatus(const Resource& resource,
                                                            const std::string& ns,
                                                            const nlohmann::json& object) override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> Patch(const Resource& resource,
                                                     const std::string& ns, const std::string& name,
                                                     const nlohmann::json& patch,
                                                     PatchType type = PatchType::kMerge,
                                                     bool status_subresource = false) override;
  [[nodiscard]] absl::Status Delete(const Resource& resource, const std::string& ns,
                                    const std::string& name,
                                    const std::string& uid_precondition = "") override;
  [[nodiscard]] absl::Status Watch(const Resource& resource, const std::string& ns,
                                   const std::string& resource_version, int timeout_seconds,
                                   const std::function<bool(const WatchEvent&)>& on_event,
                                   const std::atomic<bool>* stop,
                                   const std::string& label_selector = "") override;

  // The next `times` calls of `verb` on `resource` (plural; "" any) fail with `status`.
  void FailNext(std::string verb, std::string resource, absl::Status status, int times = 1);
  // Every call is offered to `rule` first (after the latency); a non-OK answer fails the call.
  void SetErrorRule(ErrorRule rule);
  // Every call waits this long before it is served (a slow API server).
  void SetLatency(absl::Duration latency);
  // Create on `resource` (plural) answers with `handler` and stores nothing (TokenReview).
  void SetCreateHandler(std::string resource, CreateHandler handler);
  // Drops the watch history: watches from an older resourceVersion get kOutOfRange (410 Gone).
  void Compact();
  // Ends every open watch normally (as the server's timeout does).
  void EndWatches();

  std::vector<Call> calls() const;
  // Calls of `verb` on `resource` (plural; "" any) so far.
  int CallCount(const std::string& verb, const std::string& resource = "") const;
  void ClearCalls();
  // The current revision (the resourceVersion of the last write).
  uint64_t revision() const;
  // Open watches (for tests that wait for an informer to be watching).
  int watchers() const;

 private:
  using Key = std::tuple<std::string, std::string, std::string>;  // plural, namespace, name
  struct HistoryEvent {
    uint64_t revision;
    std::string resource;
    std::string ns;
    WatchEvent event;
  };
  struct PendingFailure {
    std::string verb, resource;
    absl::Status status;
    int times;
  };

  // Latency, injected errors, the call log. Not under mu_ (it may sleep).
  absl::Status Enter(const Call& call);
  Key KeyOf(const Resource& resource, const std::string& ns, const std::string& name) const;
  // Stores `object` at `key` with a new revision and records `type`.
  nlohmann::json CommitLocked(const Key& key, nlohmann::json object, const std::string& type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write that replaces the stored object with `next` (already checked). Removes it when it
  // is being deleted and has no finalizers left.
  nlohmann::json ReplaceLocked(const Key& key, const nlohmann::json& old, nlohmann::json next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex calls_mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(calls_mu_);
  std::deque<PendingFailure> failures_ ABSL_GUARDED_BY(calls_mu_);
  ErrorRule rule_ ABSL_GUARDED_BY(calls_mu_);
  absl::Duration latency_ ABSL_GUARDED_BY(calls_mu_) = absl::ZeroDuration();
  std::map<std::string, CreateHandler> create_handlers_ ABSL_GUARDED_BY(calls_mu_);

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every write and by EndWatches
  std::map<Key, nlohmann::json> objects_ ABSL_GUARDED_BY(mu_);
  std::vector<HistoryEvent> history_ ABSL_GUARDED_BY(mu_);
  uint64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t compacted_ ABSL_GUARDED_BY(mu_) = 0;  // history before this revision is gone
  uint64_t uids_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t watch_epoch_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by EndWatches
  int watchers_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tunnelmesh::kube::testing
