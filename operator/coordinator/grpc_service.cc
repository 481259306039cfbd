#include "operator/coordinator/grpc_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "lib/base/log.h"
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

// The caller's IP address from gRPC's peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"), for
// per-source rate limits; the whole string when it has another form (e.g. a unix socket).
std::string SourceAddress(const std::string& peer) {
  std::string_view rest = peer;
  for (std::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (rest.substr(0, scheme.size()) == scheme) rest.remove_prefix(scheme.size());
  }
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close != std::string_view::npos) return std::string(rest.substr(1, close - 1));
  }
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && rest.find(':') == colon) {
    return std::string(rest.substr(0, colon));
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
  static WatchReactor* Start(std::shared_ptr<Subscription> subscription) {
    auto reactor = std::shared_ptr<WatchReactor>(new WatchReactor(std::move(subscription)));
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
    std::shared_ptr<WatchReactor> self;
    absl::MutexLock lock(&mu_);
    self.swap(self_);  // Released after the lock: this may be the last reference.
  }

 private:
  explicit WatchReactor(std::shared_ptr<Subscription> subscription)
      : subscription_(std::move(subscription)) {}

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
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<WatchReactor> self_ ABSL_GUARDED_BY(mu_);
  coord::MapUpdate current_;  // Owned by whoever holds the write slot.
};

// Hello, Register, ReportEndpoints, CallMeMaybe, Leave and Explain stay synchronous (short calls that
// never wait on the store, except Register for its own record); Watch uses the callback API.
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
    absl::StatusOr<coord::RegisterResponse> r =
        coordinator_->Register(*request, SourceAddress(context->peer()));
    if (!r.ok()) return ToGrpc(r.status());
    *response = std::move(*r);
    return grpc::Status::OK;
  }

  grpc::ServerWriteReactor<coord::MapUpdate>* Watch(grpc::CallbackServerContext* context,
                                                    const coord::WatchRequest*) override {
    absl::StatusOr<std::shared_ptr<Subscription>> sub;
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (member.ok()) sub = coordinator_->Watch(*member);
    const absl::Status status = !member.ok() ? member.status() : sub.status();
    if (!status.ok()) {
      auto* failed = new FailedWatch();
      failed->Finish(ToGrpc(status));
      return failed;
    }
    return WatchReactor::Start(*std::move(sub));
  }

  grpc::Status ReportEndpoints(grpc::ServerContext* context,
                               const coord::ReportEndpointsRequest* request,
                               coord::ReportEndpointsResponse*) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    return ToGrpc(coordinator_->ReportEndpoints(
        *member, {request->endpoints().begin(), request->endpoints().end()},
        PathCounts{request->direct_peers(), request->relayed_peers()}));
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

 private:
  // A Watch refused before it started: finishes at once and deletes itself when gRPC is done.
  class FailedWatch final : public grpc::ServerWriteReactor<coord::MapUpdate> {
   public:
    void OnDone() override { delete this; }
  };

  Coordinator* const coordinator_;
};

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const TlsIdentity& tls, const std::string& address, int port,
    const std::vector<grpc::Service*>& more_services) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->service_ = std::make_unique<Service>(coordinator);
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls.server_key_pem, tls.server_cert_pem});
  grpc::ServerBuilder builder;
  const std::string host = address.find(':') != std::string::npos && address.front() != '['
                               ? "[" + address + "]"
                               : address;
  // Without this gRPC sets SO_REUSEPORT, and a second coordinator would share the port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::SslServerCredentials(ssl),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  for (grpc::Service* service : more_services) builder.RegisterService(service);
  // Bounded messages: a map update for thousands of members fits; garbage does not.
  builder.SetMaxReceiveMessageSize(1 << 20);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError("cannot listen on " + host + ":" + std::to_string(port) +
                                  " for gRPC: is the port in use (change --grpc-port) or the "
                                  "address not local (check --listen-address)?");
  }
  return server;
}

void CoordinatorServer::Shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_.reset();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace tunnelmesh
