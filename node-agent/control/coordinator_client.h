// The agent's side of the coordinator API: verifies the coordinator's CA (by the hash given with
// --ca-hash, or trust on first use with a pin in the state directory), then makes the gRPC calls
// over TLS. Register and the unary calls are thread-safe; one Watch runs at a time and can be
// cancelled from another thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "proto/coordinator.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

// Connects to host:port with TLS, takes the CA certificate the coordinator presents and checks it:
// against `expected_hash` ("sha256:...") when given; otherwise against the PEM pinned at
// `pin_path`, or, when there is no pin yet, trusts it, writes the pin and says so in `*warning`.
// Returns the CA certificate as PEM.
[[nodiscard]] absl::StatusOr<std::string> FetchCoordinatorCa(const std::string& host, uint16_t port,
                                                             const std::string& expected_hash,
                                                             const std::string& pin_path,
                                                             std::string* warning);

class CoordinatorClient {
 public:
  CoordinatorClient(const std::string& target, const std::string& ca_pem);
  ~CoordinatorClient();

  [[nodiscard]] absl::StatusOr<coord::RegisterResponse> Register(
      const coord::RegisterRequest& request, absl::Duration timeout);
  // The session token later calls carry (from Register).
  void SetSessionToken(const std::string& token);

  // Streams map updates into `on_update` until the stream ends, fails or CancelWatch is called.
  [[nodiscard]] absl::Status Watch(const std::function<void(const coord::MapUpdate&)>& on_update);
  void CancelWatch();

  // `direct` and `relayed`: how many peers this member reaches each way now.
  [[nodiscard]] absl::Status ReportEndpoints(const std::vector<std::string>& endpoints,
                                             uint32_t direct = 0, uint32_t relayed = 0);
  [[nodiscard]] absl::Status CallMeMaybe(const PublicKey& to,
                                         const std::vector<std::string>& endpoints);
  [[nodiscard]] absl::Status Leave();
  // Which member enforces a flow and what its rules decide (`tunnelmesh-agent explain`).
  [[nodiscard]] absl::StatusOr<coord::ExplainResponse> Explain(
      const coord::ExplainRequest& request);

 private:
  void Authorize(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  mutable absl::Mutex mu_;
  std::string session_token_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* watch_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Set by CancelWatch: a watch starting afterwards ends at once (the cancel may come first).
  bool watch_cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tunnelmesh
