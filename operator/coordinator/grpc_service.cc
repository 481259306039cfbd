#include "operator/coordinator/grpc_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "lib/base/log.h"
#include "proto/coordinator.grpc.pb.h"

namespace tunnelmesh {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<PublicKey> Caller(Coordinator* coordinator, grpc::ServerContext* context) {
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

PublicKey KeyFromBytes(const std::string& bytes) {
  PublicKey key;
  if (bytes.size() == kKeySize) std::memcpy(key.bytes.data(), bytes.data(), kKeySize);
  return key;
}

}  // namespace

class CoordinatorServer::Service final : public coord::Coordinator::Service {
 public:
  explicit Service(Coordinator* coordinator) : coordinator_(coordinator) {}

  void Stop() { stopping_ = true; }

  grpc::Status Register(grpc::ServerContext*, const coord::RegisterRequest* request,
                        coord::RegisterResponse* response) override {
    absl::StatusOr<coord::RegisterResponse> r = coordinator_->Register(*request);
    if (!r.ok()) return ToGrpc(r.status());
    *response = std::move(*r);
    return grpc::Status::OK;
  }

  grpc::Status Watch(grpc::ServerContext* context, const coord::WatchRequest*,
                     grpc::ServerWriter<coord::MapUpdate>* writer) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    absl::StatusOr<std::shared_ptr<Subscription>> sub = coordinator_->Watch(*member);
    if (!sub.ok()) return ToGrpc(sub.status());
    coord::MapUpdate update;
    while (!context->IsCancelled() && !stopping_) {
      if (!(*sub)->Next(&update, absl::Milliseconds(200))) {
        if ((*sub)->cancelled()) return ToGrpc((*sub)->reason());
        continue;
      }
      if (!writer->Write(update)) break;
    }
    return grpc::Status::OK;
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
    return ToGrpc(coordinator_->CallMeMaybe(*member, KeyFromBytes(request->to_public_key()),
                                            {request->endpoints().begin(),
                                             request->endpoints().end()}));
  }

  grpc::Status Leave(grpc::ServerContext* context, const coord::LeaveRequest*,
                     coord::LeaveResponse*) override {
    absl::StatusOr<PublicKey> member = Caller(coordinator_, context);
    if (!member.ok()) return ToGrpc(member.status());
    return ToGrpc(coordinator_->Leave(*member));
  }

 private:
  Coordinator* const coordinator_;
  std::atomic<bool> stopping_{false};
};

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const TlsIdentity& tls, const std::string& address, int port) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->service_ = std::make_unique<Service>(coordinator);
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls.server_key_pem, tls.server_cert_pem});
  grpc::ServerBuilder builder;
  const std::string host =
      address.find(':') != std::string::npos && address.front() != '[' ? "[" + address + "]"
                                                                        : address;
  // Without this gRPC sets SO_REUSEPORT, and a second coordinator would share the port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::SslServerCredentials(ssl),
                           &server->port_);
  builder.RegisterService(server->service_.get());
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
  service_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_.reset();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace tunnelmesh
