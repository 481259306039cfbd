// The coordinator's gRPC front end: TLS with the coordinator's own CA, session-token
// authentication, and translation between gRPC and the Coordinator core. The unary calls run on
// gRPC's sync thread pool; Watch streams run on the callback API and hold no thread: an update is
// written when the coordinator queues it (no polling), one write in flight per stream. Other
// services may share the server (the central DNS server's DnsService).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/coordinator.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace tunnelmesh {

class CoordinatorServer {
 public:
  // Listens on address:port ("0.0.0.0", "[::]"). Port 0 picks a free one (see port()). A busy port
  // is an error naming --grpc-port. `more_services` are served beside the Coordinator service, on
  // the same port and TLS, with their own authentication (or none); they must outlive the server.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      Coordinator* coordinator, const TlsIdentity& tls, const std::string& address, int port,
      const std::vector<grpc::Service*>& more_services = {});
  ~CoordinatorServer();
  int port() const { return port_; }
  // Ends every open stream and stops accepting calls.
  void Shutdown();

 private:
  class Service;
  CoordinatorServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace tunnelmesh
