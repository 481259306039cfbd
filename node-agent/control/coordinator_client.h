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

struct CoordinatorCa {
  std::string pem;
  std::string hash;  // "sha256:..."
  // Neither --ca-hash nor a pin vouched for it: the coordinator must prove that it knows the join
  // token (Hello's token proofs) before the token is sent, and the pin is written only after a
  // successful registration (PinCoordinatorCa).
  bool unverified = false;
};

// Connects to host:port with TLS, takes the CA certificate the coordinator presents and checks it:
// against `expected_hash` ("sha256:...") when given; otherwise against the PEM pinned at
// `pin_path`; without a pin it is returned `unverified`.
[[nodiscard]] absl::StatusOr<CoordinatorCa> FetchCoordinatorCa(const std::string& host,
                                                               uint16_t port,
                                                               const std::string& expected_hash,
                                                               const std::string& pin_path);
// Writes the pin (mode 0600) once a registration with this CA succeeded.
[[nodiscard]] absl::Status PinCoordinatorCa(const std::string& pin_path, const std::string& pem);

// What an agent that has not verified the coordinator's CA checks before it sends its join token.
struct TokenCheck {
  std::string join_token;
  std::string ca_hash;  // Of the CA the TLS handshake presented.
};

class CoordinatorClient {
 public:
  CoordinatorClient(const std::string& target, const std::string& ca_pem);
  ~CoordinatorClient();

  // Says Hello; when `token_check` is given, refuses (PERMISSION_DENIED, nothing sent) unless the
  // coordinator proves that it knows that join token for the CA it presented; then registers
  // `request` with a proof that we hold `private_key` (the key of request.public_key).
  [[nodiscard]] absl::StatusOr<coord::RegisterResponse> Register(
      coord::RegisterRequest request, const SecretKey& private_key, absl::Duration timeout,
      const TokenCheck* token_check = nullptr);
  // The session token later calls carry (from Register).
  void SetSessionToken(const std::string& token);

  // Streams map updates into `on_update` until the stream ends, fails or CancelWatch is called.
  [[nodiscard]] absl::Status Watch(const std::function<void(const coord::MapUpdate&)>& on_update);
  void CancelWatch();

  // `direct`, `relayed` and `ssh`: how many peers this member reaches each way now.
  [[nodiscard]] absl::Status ReportEndpoints(const coord::ReportEndpointsRequest& request);
  [[nodiscard]] absl::Status CallMeMaybe(const PublicKey& to,
                                         const std::vector<std::string>& endpoints);
  [[nodiscard]] absl::Status Leave();
  // Which member enforces a flow and what its rules decide (`tunnelmesh-agent explain`).
  [[nodiscard]] absl::StatusOr<coord::ExplainResponse> Explain(
      const coord::ExplainRequest& request);
  // Pods this member hosts (docs/pods.md): admit one, remove one, or state the whole set (after
  // every Register). 5 s each at most.
  [[nodiscard]] absl::StatusOr<coord::AttachPodResponse> AttachPod(
      const coord::AttachPodRequest& request);
  [[nodiscard]] absl::StatusOr<coord::DetachPodResponse> DetachPod(
      const coord::DetachPodRequest& request);
  [[nodiscard]] absl::StatusOr<coord::SyncPodsResponse> SyncPods(
      const coord::SyncPodsRequest& request);

 private:
  void Authorize(grpc::ClientContext* context) const;
  // One authorized unary call on a fresh stub, 5 s at most.
  template <typename Response, typename Request, typename Method>
  absl::StatusOr<Response> Unary(Method method, const Request& request);

  std::shared_ptr<grpc::Channel> channel_;
  mutable absl::Mutex mu_;
  std::string session_token_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* watch_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Set by CancelWatch: a watch starting afterwards ends at once (the cancel may come first).
  bool watch_cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tunnelmesh
