// CoordinatorSession: this member's conversation with the coordinator. Registers (first on the
// caller's thread, then again after every lost stream, with lib/base/backoff.h's jittered backoff
// starting near 100 ms, so members are back within a second of the coordinator's return), follows
// the watch stream (logging an outage's first failure, then summaries at growing spacing from
// lib/base/retry_log.h, then the recovery, rather than every attempt), and makes the other RPCs
// (endpoint reports, call-me-maybe, leave) off the agent's control thread.
//
// Threads:
// - "watch": registration retries and the blocking Watch read; each MapUpdate and each
//   re-registration goes to the hooks, which post it to the control loop (never block there).
// - "rpc": endpoint reports and call-me-maybe, from a bounded queue (a new report replaces one
//   not yet sent; call-me-maybe beyond kMaxQueuedCallMeMaybe are dropped and counted).
// - Leave and Explain run on the caller's thread (the control socket's); the pod RPCs on the
//   agent's pods thread (PodAttacher).
// mu_ guards the client, the queues and the flags; no RPC runs under it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/crypto/keys.h"
#include "node-agent/agent/pod_attacher.h"
#include "node-agent/control/coordinator_client.h"
#include "node-agent/nat/endpoint_reporter.h"

namespace tunnelmesh {

inline constexpr size_t kMaxQueuedCallMeMaybe = 64;

// "cannot reach the coordinator at TARGET (connection refused)" when `status` is a failure to
// connect (refused, timed out, name not resolved, ...); otherwise the status's message.
std::string DescribeCoordinatorFailure(const std::string& target, const absl::Status& status);

class CoordinatorSession final : public PodCoordinator {
 public:
  struct Hooks {
    // Builds a registration request; called before every attempt (a Kubernetes token is re-read
    // because the kubelet rotates it). An error is retried like an unreachable coordinator.
    std::function<absl::StatusOr<coord::RegisterRequest>()> make_request;
    // On the watch thread, after each re-registration (not the first, which RegisterFirst returns).
    std::function<void(const coord::RegisterResponse&)> on_registered;
    // On the watch thread, for every map update. Returns false when the update could not be taken
    // (the control loop's queue was full): the session then ends the stream and reconnects, and
    // the coordinator's first message on the new stream is a full map, so nothing stays lost.
    std::function<bool(coord::MapUpdate)> on_update;
    // On the watch thread, when the coordinator refused this member for good.
    std::function<void(const absl::Status&)> on_refused;
    // On the watch thread, when the stream to the coordinator ended or a re-registration failed
    // (the session keeps trying): why. The next map update means it is back.
    std::function<void(const absl::Status&)> on_disconnected;
  };

  // `target` is host:port for gRPC; `ca_pem` the coordinator's CA; `private_key` the member's
  // (each registration proves possession of it); `token_check` given when nothing vouched for the
  // CA yet: registrations then send the join token only to a coordinator that proves it knows it,
  // until one succeeded. `seed` seeds the backoff jitter.
  CoordinatorSession(std::string target, std::string ca_pem, SecretKey private_key,
                     std::optional<TokenCheck> token_check, Hooks hooks, uint64_t seed);
  // Stops the threads.
  ~CoordinatorSession() override;

  // Registers on the caller's thread, retrying with backoff while `wait(delay)` returns true
  // (false: give up, e.g. a signal arrived or a timeout passed; the result is then Cancelled, its
  // message naming the attempts and the last error). Codes the coordinator
  // means for good (PermissionDenied, InvalidArgument, NotFound, ResourceExhausted) are returned
  // at once.
  [[nodiscard]] absl::StatusOr<coord::RegisterResponse> RegisterFirst(
      const std::function<bool(std::chrono::milliseconds)>& wait) ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the watch and RPC threads (after RegisterFirst succeeded).
  void Start();
  // Cancels the watch and joins the threads. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Queues an endpoint report; `done(ok)` runs on the RPC thread afterwards. A report still queued
  // is replaced (its `done` gets false, so the reporter marks itself dirty and tries again).
  void ReportEndpoints(EndpointReport report, std::function<void(bool ok)> done)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a call-me-maybe to `to` listing `endpoints`.
  void CallMeMaybe(const PublicKey& to, std::vector<std::string> endpoints)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Leaves the mesh: stops following the map first (the coordinator ends our watch when we leave,
  // and the watch thread must not take that for a disconnect and register again), then asks. An
  // error's message is a sentence for the person who ran `leave` (what happened, what to do).
  [[nodiscard]] absl::Status Leave() ABSL_LOCKS_EXCLUDED(mu_);
  // Asks the coordinator which member enforces a flow and what decides it (one RPC, 5 s at most).
  [[nodiscard]] absl::StatusOr<coord::ExplainResponse> Explain(const coord::ExplainRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The pod RPCs (PodAttacher's thread), with the current session: one RPC each, 5 s at most.
  absl::StatusOr<coord::AttachPodResponse> AttachPod(
      const coord::AttachPodRequest& request) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<coord::DetachPodResponse> DetachPod(
      const coord::DetachPodRequest& request) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<coord::SyncPodsResponse> SyncPods(const coord::SyncPodsRequest& request) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // The coordinator refused this member for good (MeshPeer deleted, token revoked).
  bool refused() const { return refused_.load(); }
  uint64_t dropped_call_me_maybe() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct QueuedCallMeMaybe {
    PublicKey to;
    std::vector<std::string> endpoints;
  };

  std::shared_ptr<CoordinatorClient> client() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<coord::RegisterResponse> RegisterOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits `delay` or until Stop; false when stopping.
  bool Sleep(std::chrono::milliseconds delay) ABSL_LOCKS_EXCLUDED(mu_);
  void WatchLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void RpcLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string target_;
  const std::string ca_pem_;
  const SecretKey private_key_;
  const Hooks hooks_;
  const uint64_t seed_;
  std::atomic<bool> refused_{false};
  // A name other than the one asked for is explained once, not at every re-registration.
  std::atomic<bool> name_explained_{false};
  std::thread watch_thread_;
  std::thread rpc_thread_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  // Replaced by a fresh channel after the coordinator goes away: a channel that saw the old
  // process can keep failing its TLS handshakes with the new one.
  std::shared_ptr<CoordinatorClient> client_ ABSL_GUARDED_BY(mu_);
  // Cleared after the first successful registration (the CA is trusted from then on).
  std::optional<TokenCheck> token_check_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool leaving_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<EndpointReport> report_ ABSL_GUARDED_BY(mu_);
  std::function<void(bool)> report_done_ ABSL_GUARDED_BY(mu_);
  std::deque<QueuedCallMeMaybe> call_me_maybe_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_call_me_maybe_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tunnelmesh
