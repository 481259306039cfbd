#include "node-agent/agent/coordinator_session.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/backoff.h"
#include "lib/base/log.h"
#include "lib/base/retry_log.h"
#include "lib/net/connect_failure.h"
#include "node-agent/agent/join_options.h"
#include "node-agent/peer/peer_table.h"

namespace tunnelmesh {
namespace {

coord::PathKind ProtoPathKind(disco::PathKind kind) {
  switch (kind) {
    case disco::PathKind::kDirect:
      return coord::PATH_KIND_DIRECT;
    case disco::PathKind::kSsh:
      return coord::PATH_KIND_SSH;
    case disco::PathKind::kRelay:
      return coord::PATH_KIND_RELAY;
    case disco::PathKind::kNone:
      break;
  }
  return coord::PATH_KIND_NONE;
}

coord::ReportEndpointsRequest ReportRequest(const EndpointReport& report) {
  coord::ReportEndpointsRequest request;
  for (const std::string& e : report.endpoints) request.add_endpoints(e);
  request.set_direct_peers(report.direct);
  request.set_relayed_peers(report.relayed);
  request.set_ssh_peers(report.ssh);
  for (const ReportedPath& p : report.paths) {
    coord::PeerPath* path = request.add_peer_paths();
    path->set_public_key(std::string(reinterpret_cast<const char*>(p.peer.bytes.data()), kKeySize));
    path->set_path(ProtoPathKind(p.kind));
  }
  return request;
}

// Reconnect backoff: starts near 100 ms and doubles up to 600 ms; with jitter (0.5x to 1.5x) every
// wait stays under 900 ms, so members are back within a second of the coordinator's return.
constexpr auto kBackoffStart = std::chrono::milliseconds(100);
constexpr auto kBackoffMax = std::chrono::milliseconds(600);
constexpr double kBackoffJitter = 0.5;
// A failed report is retried, but not in a tight loop.
constexpr auto kReportRetryPause = absl::Milliseconds(300);

// Refusals that retrying cannot fix: a bad or unknown token, flags the coordinator rejects, an
// unknown mesh, a full mesh or a missing Node (FailedPrecondition), an alias another member holds,
// a proof of possession the coordinator rejects. Rate limits (ResourceExhausted) and a stale
// challenge (Aborted) are retried.
bool RefusedForGood(absl::StatusCode code) {
  return code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
         code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kAlreadyExists || code == absl::StatusCode::kUnauthenticated;
}

// The coordinator ends a watch with ABORTED when another agent registered with the same node key
// and took it over. One now and then is this agent's own reconnect racing its old stream; more in
// a row mean two agents share the key, which is worth one warning per episode.
class WatchTakeovers {
 public:
  // Called when a watch ended; true when it is time to warn.
  bool Ended(const absl::Status& why, absl::Time now) {
    if (why.code() != absl::StatusCode::kAborted) {
      if (now - last_ > kEpisode) count_ = 0;
      return false;
    }
    if (now - last_ > kEpisode) {
      count_ = 0;
      warned_ = false;
    }
    last_ = now;
    return ++count_ >= kBeforeWarning && !std::exchange(warned_, true);
  }
  int count() const { return count_; }

 private:
  static constexpr int kBeforeWarning = 3;
  static constexpr absl::Duration kEpisode = absl::Seconds(60);
  int count_ = 0;
  bool warned_ = false;
  absl::Time last_ = absl::InfinitePast();
};

}  // namespace

std::string DescribeCoordinatorFailure(const std::string& target, const absl::Status& status) {
  // Only the RPC library's own connection failures are put in words: a coordinator's refusal may
  // mention a timeout of its own (an API server it asked), which is not ours to reword.
  const std::string text(status.message());
  std::optional<std::string> cause;
  if (status.code() == absl::StatusCode::kDeadlineExceeded && text == "Deadline Exceeded") {
    cause = "timed out";
  } else if (status.code() == absl::StatusCode::kUnavailable &&
             (absl::StrContains(text, "failed to connect to all addresses") ||
              absl::StrContains(text, "DNS resolution failed"))) {
    cause = ConnectFailureFromText(text);
    if (!cause) cause = "no connection";
  }
  if (cause) return "cannot reach the coordinator at " + target + " (" + *cause + ")";
  return text;
}

CoordinatorSession::CoordinatorSession(std::string target, std::string ca_pem,
                                       SecretKey private_key, std::optional<TokenCheck> token_check,
                                       Hooks hooks, uint64_t seed)
    : target_(std::move(target)),
      ca_pem_(std::move(ca_pem)),
      private_key_(std::move(private_key)),
      hooks_(std::move(hooks)),
      seed_(seed),
      client_(std::make_shared<CoordinatorClient>(target_, ca_pem_)),
      token_check_(std::move(token_check)) {}

CoordinatorSession::~CoordinatorSession() { Stop(); }

std::shared_ptr<CoordinatorClient> CoordinatorSession::client() const {
  absl::MutexLock lock(&mu_);
  return client_;
}

absl::StatusOr<coord::RegisterResponse> CoordinatorSession::RegisterOnce() {
  absl::StatusOr<coord::RegisterRequest> request = hooks_.make_request();
  if (!request.ok()) return request.status();
  std::shared_ptr<CoordinatorClient> coordinator;
  std::optional<TokenCheck> token_check;
  {
    absl::MutexLock lock(&mu_);
    coordinator = client_;
    token_check = token_check_;
  }
  const std::string requested = request->name();
  absl::StatusOr<coord::RegisterResponse> response = coordinator->Register(
      *std::move(request), private_key_, absl::Seconds(5), token_check ? &*token_check : nullptr);
  if (!response.ok()) return response.status();
  if (response->mesh_ips().empty()) {
    return absl::InternalError("the coordinator assigned no mesh IP");
  }
  if (token_check) {
    absl::MutexLock lock(&mu_);
    token_check_.reset();
  }
  coordinator->SetSessionToken(response->session_token());
  const auto& ips = response->mesh_ips();
  TM_LOG_INFO("registered as {} with {}{}", response->name(), ips[0],
              ips.size() > 1 ? " and " + ips[1] : std::string());
  if (!requested.empty() && response->name() != requested && !name_explained_.exchange(true)) {
    const std::string label = MakeDnsLabel(requested);
    if (response->name() == label) {
      TM_LOG_INFO(
          "registered as \"{}\", not \"{}\": member names are DNS labels (lowercase "
          "letters, digits and '-')",
          response->name(), requested);
    } else if (!label.empty() && response->name().rfind(label + "-", 0) == 0) {
      TM_LOG_WARN(
          "registered as \"{}\", not \"{}\": another member (another node key) already holds "
          "that name, so the coordinator added a suffix; pick another --name to choose this "
          "member's name",
          response->name(), label);
    } else {
      TM_LOG_WARN("registered as \"{}\", not \"{}\": the coordinator chose another name",
                  response->name(), requested);
    }
  }
  return response;
}

absl::StatusOr<coord::RegisterResponse> CoordinatorSession::RegisterFirst(
    const std::function<bool(std::chrono::milliseconds)>& wait) {
  Backoff backoff(kBackoffStart, kBackoffMax, seed_, kBackoffJitter);
  RetryLog retry_log(seed_ + 2);
  while (true) {
    absl::StatusOr<coord::RegisterResponse> response = RegisterOnce();
    if (response.ok()) {
      if (std::optional<RetryLog::Outage> outage = retry_log.OnSuccess(absl::Now())) {
        TM_LOG_INFO("reached the coordinator at {} after {} failed attempts over {}", target_,
                    outage->attempts, FormatOutageDuration(outage->elapsed));
      }
      return response;
    }
    if (RefusedForGood(response.status().code())) return response;
    const std::string why = DescribeCoordinatorFailure(target_, response.status());
    switch (retry_log.OnFailure(absl::Now())) {
      case RetryLog::Say::kFirst:
        TM_LOG_WARN("registering: {}; retrying (a summary follows while it lasts)", why);
        break;
      case RetryLog::Say::kSummary:
        TM_LOG_WARN("still cannot register after {} attempts over {}: {}", retry_log.attempts(),
                    FormatOutageDuration(retry_log.elapsed(absl::Now())), why);
        break;
      case RetryLog::Say::kNothing:
        TM_LOG_DEBUG("registering: {}; retrying", why);
        break;
    }
    if (!wait(backoff.Next())) {
      return absl::CancelledError(absl::StrCat("stopped before registering after ",
                                               retry_log.attempts(),
                                               " attempts; last error: ", why));
    }
  }
}

void CoordinatorSession::Start() {
  watch_thread_ = std::thread([this] { WatchLoop(); });
  rpc_thread_ = std::thread([this] { RpcLoop(); });
}

void CoordinatorSession::Stop() {
  std::shared_ptr<CoordinatorClient> coordinator;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    coordinator = client_;
    wake_.SignalAll();
  }
  coordinator->CancelWatch();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (rpc_thread_.joinable()) rpc_thread_.join();
  std::function<void(bool)> done;
  {
    absl::MutexLock lock(&mu_);
    done = std::move(report_done_);
    report_done_ = nullptr;
    report_.reset();
  }
  if (done) done(false);
}

bool CoordinatorSession::Sleep(std::chrono::milliseconds delay) {
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + absl::FromChrono(delay);
  while (!stopping_ && !leaving_) {
    if (wake_.WaitWithDeadline(&mu_, deadline)) break;
  }
  return !stopping_ && !leaving_;
}

void CoordinatorSession::WatchLoop() {
  Backoff backoff(kBackoffStart, kBackoffMax, seed_ + 1, kBackoffJitter);
  WatchTakeovers takeovers;
  // Reconnects stay fast (back within a second of the coordinator's return); the log says the
  // first failure, then a summary now and then, then the recovery.
  RetryLog retry_log(seed_ + 3);
  auto failed = [&](const std::string& first_line, const std::string& why) {
    switch (retry_log.OnFailure(absl::Now())) {
      case RetryLog::Say::kFirst:
        TM_LOG_WARN("{}", first_line);
        break;
      case RetryLog::Say::kSummary:
        TM_LOG_WARN("still cannot reach the coordinator after {} attempts over {}: {}",
                    retry_log.attempts(), FormatOutageDuration(retry_log.elapsed(absl::Now())),
                    why);
        break;
      case RetryLog::Say::kNothing:
        TM_LOG_DEBUG("reconnecting to the coordinator: {}", why);
        break;
    }
  };
  bool first = true;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || leaving_) break;
      if (!first) client_ = std::make_shared<CoordinatorClient>(target_, ca_pem_);
    }
    if (!first) {
      absl::StatusOr<coord::RegisterResponse> response = RegisterOnce();
      if (!response.ok() && response.status().code() == absl::StatusCode::kPermissionDenied) {
        TM_LOG_ERROR("the coordinator refused this member: {}",
                     std::string(response.status().message()));
        refused_ = true;
        if (hooks_.on_refused) hooks_.on_refused(response.status());
        break;
      }
      if (!response.ok()) {
        const std::string why = DescribeCoordinatorFailure(target_, response.status());
        // `status` shows the reason: in words, as the log does.
        if (hooks_.on_disconnected) {
          hooks_.on_disconnected(absl::Status(response.status().code(), why));
        }
        failed("re-registering: " + why + "; retrying (established tunnels keep working)", why);
        if (!Sleep(backoff.Next())) break;
        continue;
      }
      if (std::optional<RetryLog::Outage> outage = retry_log.OnSuccess(absl::Now())) {
        TM_LOG_INFO("back in touch with the coordinator at {} after {} ({} attempts)", target_,
                    FormatOutageDuration(outage->elapsed), outage->attempts);
      }
      if (hooks_.on_registered) hooks_.on_registered(*response);
    }
    first = false;
    bool resync = false;
    absl::Status s = client()->Watch([&](const coord::MapUpdate& update) {
      backoff.Reset();
      if (!resync && !hooks_.on_update(update)) {
        resync = true;
        client()->CancelWatch();
      }
    });
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || leaving_) break;
    }
    if (s.code() == absl::StatusCode::kPermissionDenied) {
      TM_LOG_ERROR("removed from the mesh by the coordinator: {}", std::string(s.message()));
      refused_ = true;
      if (hooks_.on_refused) hooks_.on_refused(s);
      break;
    }
    // A stream that ends names no connect failure ("Cancelling all calls", "Socket closed"):
    // the coordinator went away or restarts. The library's text goes to the debug log only.
    TM_LOG_DEBUG("watch stream ended: {}", s.ToString());
    std::string why = std::string(s.message());
    if (std::optional<std::string> cause = ConnectFailureFromText(why)) {
      why = *cause;
    } else if ((s.code() == absl::StatusCode::kUnavailable ||
                s.code() == absl::StatusCode::kCancelled) &&
               why.rfind("the coordinator", 0) != 0) {
      why = "it closed the connection";  // the library's words for a server going away
    }
    if (hooks_.on_disconnected) {
      hooks_.on_disconnected(
          absl::Status(s.code(), "lost the coordinator at " + target_ + " (" + why + ")"));
    }
    if (takeovers.Ended(s, absl::Now())) {
      TM_LOG_WARN(
          "another agent is using this node key (a copied state dir?): the coordinator gave this "
          "member's watch to it {} times within a minute ({}). Stop the other agent, or give it "
          "its own --state-dir so that it gets its own key",
          takeovers.count(), std::string(s.message()));
    }
    if (resync) {
      TM_LOG_WARN("a network map update could not be applied; reconnecting for a full map");
    } else {
      failed("lost the coordinator at " + target_ + " (" + why +
                 "); reconnecting (established tunnels keep working)",
             "cannot reach the coordinator at " + target_ + " (" + why + ")");
    }
    if (!Sleep(backoff.Next())) break;
  }
}

void CoordinatorSession::ReportEndpoints(EndpointReport report, std::function<void(bool)> done) {
  std::function<void(bool)> replaced;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      replaced = std::move(done);
    } else {
      replaced = std::move(report_done_);
      report_ = std::move(report);
      report_done_ = std::move(done);
      wake_.SignalAll();
    }
  }
  if (replaced) replaced(false);
}

void CoordinatorSession::CallMeMaybe(const PublicKey& to, std::vector<std::string> endpoints) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || call_me_maybe_.size() >= kMaxQueuedCallMeMaybe) {
    ++dropped_call_me_maybe_;
    return;
  }
  call_me_maybe_.push_back({to, std::move(endpoints)});
  wake_.SignalAll();
}

uint64_t CoordinatorSession::dropped_call_me_maybe() const {
  absl::MutexLock lock(&mu_);
  return dropped_call_me_maybe_;
}

void CoordinatorSession::RpcLoop() {
  while (true) {
    std::optional<EndpointReport> report;
    std::function<void(bool)> done;
    std::deque<QueuedCallMeMaybe> calls;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && !report_ && call_me_maybe_.empty()) wake_.Wait(&mu_);
      if (stopping_) return;
      report.swap(report_);
      done = std::move(report_done_);
      report_done_ = nullptr;
      calls.swap(call_me_maybe_);
    }
    std::shared_ptr<CoordinatorClient> coordinator = client();
    bool session_lost = false;
    if (report) {
      absl::Status s = coordinator->ReportEndpoints(ReportRequest(*report));
      if (!s.ok()) TM_LOG_DEBUG("reporting endpoints: {}", std::string(s.message()));
      session_lost = s.code() == absl::StatusCode::kUnauthenticated;
      if (done) done(s.ok());
      if (!s.ok()) {
        absl::MutexLock lock(&mu_);
        wake_.WaitWithTimeout(&mu_, kReportRetryPause);
      }
    }
    // Ask peers (through the coordinator) to probe us now, so both sides punch at the same time.
    for (const QueuedCallMeMaybe& call : calls) {
      if (session_lost) break;
      absl::Status s = coordinator->CallMeMaybe(call.to, call.endpoints);
      TM_LOG_DEBUG("call-me-maybe to {} with {} endpoints: {}", call.to.Short(),
                   call.endpoints.size(), s.ToString());
      session_lost = s.code() == absl::StatusCode::kUnauthenticated;
    }
    // The coordinator no longer knows our session (it restarted, expired us, or another agent
    // with our key registered): end the watch, whose loop registers again at once.
    if (session_lost) {
      bool leaving;
      {
        absl::MutexLock lock(&mu_);
        leaving = leaving_;
      }
      // After our own leave the coordinator has forgotten the session, as it should.
      if (leaving) {
        TM_LOG_DEBUG("the coordinator no longer knows this member's session (it left the mesh)");
        continue;
      }
      TM_LOG_WARN("the coordinator no longer accepts this member's session; registering again");
      coordinator->CancelWatch();
    }
  }
}

absl::Status CoordinatorSession::Leave() {
  std::shared_ptr<CoordinatorClient> coordinator;
  {
    absl::MutexLock lock(&mu_);
    leaving_ = true;
    coordinator = client_;
    wake_.SignalAll();
  }
  coordinator->CancelWatch();
  absl::Status s = coordinator->Leave();
  if (s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    leaving_ = false;
  }
  // Said to the person who ran `leave`: what happened and what to do, not the RPC's text.
  const std::string described = DescribeCoordinatorFailure(target_, s);
  if (described != s.message()) {
    return absl::UnavailableError(described +
                                  ": the member stays registered; try again when it is up");
  }
  return absl::Status(s.code(), "the coordinator did not take the leave: " +
                                    std::string(s.message()) + "; the member stays registered");
}

absl::StatusOr<coord::ExplainResponse> CoordinatorSession::Explain(
    const coord::ExplainRequest& request) {
  return client()->Explain(request);
}

absl::StatusOr<coord::AttachPodResponse> CoordinatorSession::AttachPod(
    const coord::AttachPodRequest& request) {
  return client()->AttachPod(request);
}

absl::StatusOr<coord::DetachPodResponse> CoordinatorSession::DetachPod(
    const coord::DetachPodRequest& request) {
  return client()->DetachPod(request);
}

absl::StatusOr<coord::SyncPodsResponse> CoordinatorSession::SyncPods(
    const coord::SyncPodsRequest& request) {
  return client()->SyncPods(request);
}

}  // namespace tunnelmesh
