#include "operator/coordinator/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/base/log.h"
#include "lib/base/rlimit.h"
#include "lib/net/ip.h"
#include "proto/coordinator.grpc.pb.h"

namespace tunnelmesh {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<PublicKey> Caller(Coordinator* coordinator, grpc::ServerContextBase* context) {
  auto it = context->client_metadata().find("authorization");
  if (it == context->client_metadata().end()) {
    coordinator->counters().unauthenticated_calls.fetch_add(1);
    return absl::UnauthenticatedError("missing authorization metadata: register first");
  }
  absl::StatusOr<PublicKey> key =
      coordinator->Authenticate(std::string(it->second.data(), it->second.size()));
  if (!key.ok()) coordinator->counters().unauthenticated_calls.fetch_add(1);
  return key;
}

// The source a per-source rate limit counts the caller in, from gRPC's peer string
// ("ipv4:1.2.3.4:5", "ipv6:[2001:db8::1]:5"): its IPv4 address, or its IPv6 /64 (SourceBlock);
// the whole string when it has another form (e.g. a unix socket).
std::string SourceAddress(const std::string& peer) {
  std::string_view rest = peer;
  for (std::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (rest.substr(0, scheme.size()) == scheme) rest.remove_prefix(scheme.size());
  }
  std::string_view host;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close != std::string_view::npos) host = rest.substr(1, close - 1);
  } else if (const size_t colon = rest.rfind(':');
             colon != std::string_view::npos && rest.find(':') == colon) {
    host = rest.substr(0, colon);
  }
  absl::StatusOr<IpAddress> address = IpAddress::Parse(host);
  if (!address.ok()) return host.empty() ? peer : std::string(host);
  const Prefix block = SourceBlock(*address);
  return block.address().is_v4() ? block.address().ToString() : block.ToString();
}

// The caller's address and port for people ("1.2.3.4:5", "[2001:db8::1]:5"), from gRPC's peer
// string: its scheme dropped.
std::string PeerAddress(const std::string& peer) {
  for (std::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (peer.rfind(scheme, 0) == 0) return peer.substr(scheme.size());
  }
  return peer;
}

PublicKey KeyFromBytes(const std::string& bytes) {
  PublicKey key;
  if (bytes.size() == kKeySize) std::memcpy(key.bytes.data(), bytes.data(), kKeySize);
  return key;
}

}  // namespace

// One member's Watch stream on gRPC's callback API: no thread of its own. Updates are written as
// the coordinator queues them: the subscription's wake hook starts a write when none is in flight,
// and each finished write starts the next. At most one write is in flight (gRPC's rule), so a
// slow member's backlog stays in its bounded Subscription, which collapses it.
//
// Lifetime: gRPC holds the reactor until OnDone; the wake hook holds only a weak reference, so a
// wake racing with the end of the stream finds nothing (self_ keeps it alive until OnDone).
// Locks: mu_ is never held while calling into the Subscription or the Coordinator, nor while
// calling StartWrite/Finish.
class WatchReactor final : public grpc::ServerWriteReactor<coord::MapUpdate> {
 public:
  // `on_done` runs once when the stream is over (gRPC's OnDone).
  static WatchReactor* Start(std::shared_ptr<Subscription> subscription,
                             std::function<void(const Subscription*)> on_done) {
    auto reactor = std::shared_ptr<WatchReactor>(
        new WatchReactor(std::move(subscription), std::move(on_done)));
    {
      absl::MutexLock lock(&reactor->mu_);
      reactor->self_ = reactor;
    }
    std::weak_ptr<WatchReactor> weak = reactor;
    reactor->subscription_->SetWakeHook([weak] {
      if (std::shared_ptr<WatchReactor> r = weak.lock()) r->Pump();
    });
    reactor->Pump();
    return reactor.get();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;  // The stream is gone (client left or server shutting down).
    }
    Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
    }
    Pump();
  }

  void OnDone() override {
    subscription_->SetWakeHook(nullptr);
    if (on_done_) on_done_(subscription_.get());
    std::shared_ptr<WatchReactor> self;
    absl::MutexLock lock(&mu_);
    self.swap(self_);  // Released after the lock: this may be the last reference.
  }

 private:
  WatchReactor(std::shared_ptr<Subscription> subscription,
               std::function<void(const Subscription*)> on_done)
      : subscription_(std::move(subscription)), on_done_(std::move(on_done)) {}

  // Takes the write slot if it is free, then writes the next update or finishes the stream.
  void Pump() {
    while (true) {
      bool cancelled = false;
      {
        absl::MutexLock lock(&mu_);
        if (writing_ || finished_) return;
        finished_ = cancelled = broken_;
        writing_ = !broken_;  // This thread owns the slot (and current_) now.
      }
      if (cancelled) {
        Finish(grpc::Status::CANCELLED);
        return;
      }
      const Subscription::Poll poll = subscription_->TryNext(&current_);
      if (poll == Subscription::Poll::kUpdate) {
        StartWrite(&current_);
        return;
      }
      {
        absl::MutexLock lock(&mu_);
        writing_ = false;
        finished_ = poll == Subscription::Poll::kEnded;
      }
      if (poll == Subscription::Poll::kEnded) {
        Finish(ToGrpc(subscription_->reason()));
        return;
      }
      // Work queued after TryNext looked but before the slot was free woke nobody who could
      // write it: look again.
      if (!subscription_->HasWork()) return;
    }
  }

  const std::shared_ptr<Subscription> subscription_;
  const std::function<void(const Subscription*)> on_done_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<WatchReactor> self_ ABSL_GUARDED_BY(mu_);
  coord::MapUpdate current_;  // Owned by whoever holds the write slot.
};

// Hello, Register, ReportEndpoints, CallMeMaybe, Leave and Explain stay synchronous (short calls
// that never wait on the store, except Register for its own record); Watch uses the callback API.
class CoordinatorServer::Service final
    : public coord::Coordinator::WithCallbackMethod_Watch<coord::Coordinator::Service> {
 public:
  explicit Service(Coordinator* coordinator) : coordinator_(coordinator) {}

  grpc::Status Hello(grpc::ServerContext* context, const coord::HelloRequest* request,
                     coord::HelloResponse* response) override {
    absl::StatusOr<coord::HelloResponse> r =
        coordinator_->Hello(*request, SourceAddress(context->peer()));
    if (!r.ok()) return ToGrpc(r.status());
    *response = std::move(*r);
    return grpc::Status::OK;
  }

  grpc::Status Register(grpc::ServerContext* context, const coord::RegisterRequest* request,
                        coord::RegisterResponse* response) override {
    const std::string source = SourceAddress(context->peer());
    absl::StatusOr<coord::RegisterResponse> r = coordinator_->Register(*request, source);
    if (!r.ok()) {
      coordinator_->NoteRefusedJoin(*request, PeerAddress(context->peer()), source, r.status());
      return ToGrpc(r.status());
    }
    *response = std::move(*r);
    return grpc::Status::OK;
  }

  grpc::ServerWriteReactor<coord::MapUpdate>* Watch(grpc::CallbackServerContext* context,
                                                    const coord::WatchRequest*) override {
    absl::StatusOr<std::shared_ptr<Subscription>> sub;
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (member.ok()) sub = coordinator_->Watch(*member, PeerAddress(context->peer()));
    const absl::Status status = !member.ok() ? member.status() : sub.status();
    if (!status.ok()) {
      auto* failed = new FailedWatch();
      failed->Finish(ToGrpc(status));
      return failed;
    }
    return WatchReactor::Start(
        *std::move(sub), [coordinator = coordinator_, key = *member](const Subscription* ended) {
          coordinator->WatchEnded(key, ended);
        });
  }

  grpc::Status ReportEndpoints(grpc::ServerContext* context,
                               const coord::ReportEndpointsRequest* request,
                               coord::ReportEndpointsResponse*) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    if (request->peer_paths_size() > static_cast<int>(Coordinator::kMaxPeerPaths)) {
      coordinator_->counters().malformed_requests.fetch_add(1);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "at most " + std::to_string(Coordinator::kMaxPeerPaths) + " peer paths");
    }
    std::vector<PeerPathReport> peer_paths;
    peer_paths.reserve(request->peer_paths_size());
    for (const coord::PeerPath& p : request->peer_paths()) {
      if (p.public_key().size() != kKeySize) {
        coordinator_->counters().malformed_requests.fetch_add(1);
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "peer_paths: a public key is not 32 bytes");
      }
      PeerPathReport report;
      std::memcpy(report.peer.bytes.data(), p.public_key().data(), kKeySize);
      report.path = p.path();
      peer_paths.push_back(report);
    }
    return ToGrpc(coordinator_->ReportEndpoints(
        *member, {request->endpoints().begin(), request->endpoints().end()},
        PathCounts{request->direct_peers(), request->relayed_peers(), request->ssh_peers()},
        peer_paths));
  }

  grpc::Status CallMeMaybe(grpc::ServerContext* context, const coord::CallMeMaybeRequest* request,
                           coord::CallMeMaybeResponse*) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    if (request->to_public_key().size() != kKeySize) {
      coordinator_->counters().malformed_requests.fetch_add(1);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "to_public_key must be 32 bytes");
    }
    return ToGrpc(
        coordinator_->CallMeMaybe(*member, KeyFromBytes(request->to_public_key()),
                                  {request->endpoints().begin(), request->endpoints().end()}));
  }

  grpc::Status Explain(grpc::ServerContext* context, const coord::ExplainRequest* request,
                       coord::ExplainResponse* response) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    absl::StatusOr<coord::ExplainResponse> explained = coordinator_->Explain(*member, *request);
    if (!explained.ok()) return ToGrpc(explained.status());
    *response = *std::move(explained);
    return grpc::Status::OK;
  }

  grpc::Status Leave(grpc::ServerContext* context, const coord::LeaveRequest*,
                     coord::LeaveResponse*) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    return ToGrpc(coordinator_->Leave(*member));
  }

  // Pods: the caller is their host. An attach may read the Pod from the API server and waits for
  // its record to be durable, like Register.
  grpc::Status AttachPod(grpc::ServerContext* context, const coord::AttachPodRequest* request,
                         coord::AttachPodResponse* response) override {
    return AsHost(context, &Coordinator::AttachPod, *request, response);
  }
  grpc::Status DetachPod(grpc::ServerContext* context, const coord::DetachPodRequest* request,
                         coord::DetachPodResponse* response) override {
    return AsHost(context, &Coordinator::DetachPod, *request, response);
  }
  grpc::Status SyncPods(grpc::ServerContext* context, const coord::SyncPodsRequest* request,
                        coord::SyncPodsResponse* response) override {
    return AsHost(context, &Coordinator::SyncPods, *request, response);
  }

 private:
  template <typename Request, typename Response>
  grpc::Status AsHost(grpc::ServerContext* context,
                      absl::StatusOr<Response> (Coordinator::*call)(const PublicKey&,
                                                                    const Request&),
                      const Request& request, Response* response) {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    absl::StatusOr<Response> result = (coordinator_->*call)(*member, request);
    if (!result.ok()) return ToGrpc(result.status());
    *response = *std::move(result);
    return grpc::Status::OK;
  }

  // A Watch refused before it started: finishes at once and deletes itself when gRPC is done.
  class FailedWatch final : public grpc::ServerWriteReactor<coord::MapUpdate> {
   public:
    void OnDone() override { delete this; }
  };

  Coordinator* const coordinator_;
};

ListenerWatchdog::Verdict ListenerWatchdog::Observe(bool accepting, bool descriptors_available) {
  if (accepting) {
    failures_ = 0;
    return Verdict::kHealthy;
  }
  ++failures_;
  if (failures_ < failures_before_rebuild_) return Verdict::kFailing;
  if (!descriptors_available) return Verdict::kWaitForDescriptors;
  failures_ = 0;
  return Verdict::kRebuild;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const TlsIdentity& tls, const std::string& address, int port,
    const std::vector<grpc::Service*>& more_services) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->coordinator_ = coordinator;
  server->tls_ = tls;
  server->more_services_ = more_services;
  server->service_ = std::make_unique<Service>(coordinator);
  server->host_ = address.find(':') != std::string::npos && address.front() != '['
                      ? "[" + address + "]"
                      : address;
  int bound = 0;
  {
    absl::MutexLock lock(&server->server_mu_);
    server->BuildLocked(port, &bound);
  }
  if (bound == 0) {
    return absl::UnavailableError("cannot listen on " + server->host_ + ":" + std::to_string(port) +
                                  " for gRPC: is the port in use (change --grpc-port) or the "
                                  "address not local (check --listen-address)?");
  }
  server->port_ = bound;
  // The watchdog dials the wildcard's loopback, or the address itself.
  std::string probe_host = server->host_;
  if (probe_host.empty() || probe_host == "0.0.0.0") probe_host = "127.0.0.1";
  if (probe_host == "[::]" || probe_host == "[::0]") probe_host = "[::1]";
  server->probe_target_ = probe_host + ":" + std::to_string(bound);
  return server;
}

void CoordinatorServer::BuildLocked(int port, int* bound) {
  *bound = 0;
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls_.server_key_pem, tls_.server_cert_pem});
  grpc::ServerBuilder builder;
  // Without this gRPC sets SO_REUSEPORT, and a second coordinator would share the port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // What gRPC 1.51 offers against descriptor exhaustion (it has no cap on connections; every
  // argument here is defined in its grpc_types.h, an unknown one would be ignored silently):
  // a connection that has not finished TLS and the HTTP/2 preface within 10 s is closed (the
  // default, 120 s, lets a slow opener hold a descriptor for two minutes); a connection with no
  // call for 5 minutes is closed (an agent always holds its Watch, so only idle ones go); at most
  // 100 concurrent streams per connection (an agent needs a few; CoreDNS's queries share one).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 5 * 60'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
  // A member whose host vanished (no FIN, no RST) holds its Watch until this notices: a ping every
  // 15 s, unanswered for 5 s, closes the connection, and the member's peers see it go offline.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 15'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  // The synchronous calls (Register waits for the store) get at most 64 threads; calls beyond
  // that are refused with RESOURCE_EXHAUSTED, which agents retry.
  grpc::ResourceQuota quota("tunnelmesh-coordinator");
  quota.SetMaxThreads(64);
  builder.SetResourceQuota(quota);
  builder.AddListeningPort(host_ + ":" + std::to_string(port), grpc::SslServerCredentials(ssl),
                           bound);
  builder.RegisterService(service_.get());
  for (grpc::Service* service : more_services_) builder.RegisterService(service);
  // Bounded messages: a map update for thousands of members fits; garbage does not.
  builder.SetMaxReceiveMessageSize(1 << 20);
  server_ = builder.BuildAndStart();
  if (!server_) *bound = 0;
}

bool CoordinatorServer::ProbeAccepting(absl::Duration timeout) const {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls_.ca_cert_pem;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(kCoordinatorServerName);
  // A connection of its own: the global pool could hand back one accepted long ago.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(probe_target_, grpc::SslCredentials(ssl), args);
  return channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

absl::Status CoordinatorServer::Rebuild() {
  absl::MutexLock lock(&server_mu_);
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_.reset();  // Closes the stuck listening socket, and its backlog with it.
  }
  int bound = 0;
  BuildLocked(port_, &bound);
  if (bound != port_) {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    return absl::UnavailableError("cannot listen on " + host_ + ":" + std::to_string(port_) +
                                  " again for gRPC (descriptors exhausted, or the port taken)");
  }
  return absl::OkStatus();
}

void CoordinatorServer::StartWatchdog(WatchdogOptions options) {
  if (!options.probe) {
    options.probe = [this](absl::Duration timeout) { return ProbeAccepting(timeout); };
  }
  if (!options.descriptors_available) {
    options.descriptors_available = [spare = options.spare_descriptors] {
      return DescriptorsAvailable(spare);
    };
  }
  watchdog_ = std::thread([this, options = std::move(options)] { WatchdogLoop(options); });
}

void CoordinatorServer::WatchdogLoop(WatchdogOptions options) {
  ListenerWatchdog watchdog(options.failures_before_rebuild);
  bool waiting_logged = false;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options.interval)) return;
    }
    const bool accepting = options.probe(options.probe_timeout);
    watchdog_counters_.checks.fetch_add(1, std::memory_order_relaxed);
    if (!accepting) watchdog_counters_.failed_checks.fetch_add(1, std::memory_order_relaxed);
    const bool descriptors = accepting || options.descriptors_available();
    switch (watchdog.Observe(accepting, descriptors)) {
      case ListenerWatchdog::Verdict::kHealthy:
        waiting_logged = false;
        break;
      case ListenerWatchdog::Verdict::kFailing:
        TM_LOG_DEBUG("gRPC port {} did not complete a TLS connection within {} ({} in a row)",
                     port_, absl::FormatDuration(options.probe_timeout),
                     watchdog.consecutive_failures());
        break;
      case ListenerWatchdog::Verdict::kWaitForDescriptors:
        watchdog_counters_.descriptor_waits.fetch_add(1, std::memory_order_relaxed);
        if (!waiting_logged) {
          TM_LOG_WARN(
              "gRPC port {} does not accept connections and the process has no descriptors to "
              "spare (limit {}): the server is rebuilt once descriptors are free again",
              port_, DescriptorSoftLimit());
          waiting_logged = true;
        }
        break;
      case ListenerWatchdog::Verdict::kRebuild: {
        waiting_logged = false;
        TM_LOG_WARN(
            "gRPC port {} stopped accepting connections ({} TLS probes in a row failed; gRPC 1.51 "
            "stops accepting for good after accept4 fails, e.g. with EMFILE): rebuilding the gRPC "
            "server on the same port; members' streams end and they register again",
            port_, options.failures_before_rebuild);
        const absl::Status rebuilt = Rebuild();
        if (rebuilt.ok()) {
          watchdog_counters_.restarts.fetch_add(1, std::memory_order_relaxed);
          TM_LOG_INFO("gRPC server rebuilt on port {}", port_);
        } else {
          watchdog_counters_.restart_failures.fetch_add(1, std::memory_order_relaxed);
          TM_LOG_ERROR("{} (tried again after the next failed probes)",
                       std::string(rebuilt.message()));
        }
        break;
      }
    }
  }
}

void CoordinatorServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watchdog_.joinable()) watchdog_.join();
  absl::MutexLock lock(&server_mu_);
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_.reset();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace tunnelmesh
