#include "node-agent/control/coordinator_client.h"

#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/algorithm/container.h"
#include "lib/base/file.h"
#include "lib/crypto/aead.h"
#include "lib/crypto/control_proofs.h"
#include "lib/crypto/x509.h"
#include "lib/net/connect_failure.h"
#include "proto/coordinator.grpc.pb.h"

namespace tunnelmesh {
namespace {

// How long one registration attempt waits for the channel to connect before asking anyway.
constexpr absl::Duration kConnectWait = absl::Seconds(2);

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<int> Dial(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found) {
    return absl::UnavailableError("cannot reach the coordinator at " + host +
                                  " (the name did not resolve): check the host name");
  }
  int fd = -1;
  int error = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    timeval timeout{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    error = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  if (fd < 0) {
    const std::string where = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return absl::UnavailableError("cannot reach the coordinator at " + where + ":" +
                                  std::to_string(port) + " (" + ConnectErrnoWords(error) +
                                  "): is it running, and is this its gRPC port?");
  }
  return fd;
}

}  // namespace

absl::StatusOr<CoordinatorCa> FetchCoordinatorCa(const std::string& host, uint16_t port,
                                                 const std::string& expected_hash,
                                                 const std::string& pin_path) {
  absl::StatusOr<int> fd = Dial(host, port);
  if (!fd.ok()) return fd.status();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  // Verification happens below, against the pinned CA: the handshake only collects the chain.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn));
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, *fd);
  SSL_set_tlsext_host_name(ssl, kCoordinatorServerName);
  std::string ca_pem;
  if (SSL_connect(ssl) == 1) {
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
    // The CA is the self-signed certificate of the chain.
    for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
      X509* cert = sk_X509_value(chain, i);
      if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0) continue;
      BIO* bio = BIO_new(BIO_s_mem());
      PEM_write_bio_X509(bio, cert);
      char* data = nullptr;
      long len = BIO_get_mem_data(bio, &data);
      ca_pem.assign(data, static_cast<size_t>(len));
      BIO_free(bio);
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(*fd);
  if (ca_pem.empty()) {
    return absl::UnavailableError("the service at " + host + ":" + std::to_string(port) +
                                  " did not present a TunnelMesh coordinator certificate chain: "
                                  "is this the coordinator's gRPC port?");
  }
  absl::StatusOr<std::string> hash = CaCertHash(ca_pem);
  if (!hash.ok()) return hash.status();
  CoordinatorCa ca{ca_pem, *hash, false};
  if (!expected_hash.empty()) {
    if (*hash != expected_hash) {
      return absl::PermissionDeniedError("the coordinator's CA hash is " + *hash +
                                         ", not the --ca-hash given (" + expected_hash +
                                         "): refusing to talk to it");
    }
  } else {
    // A missing or unreadable pin is no pin (trust on first use below).
    absl::StatusOr<std::string> pinned_file = ReadFile(pin_path);
    const std::string pinned = pinned_file.ok() ? *pinned_file : std::string();
    if (!pinned.empty()) {
      absl::StatusOr<std::string> pinned_hash = CaCertHash(pinned);
      if (!pinned_hash.ok() || *pinned_hash != *hash) {
        return absl::PermissionDeniedError(
            "the coordinator's CA (" + *hash + ") differs from the one pinned in " + pin_path +
            ": if the coordinator was reinstalled, delete the pin or pass --ca-hash");
      }
    } else {
      ca.unverified = true;
    }
  }
  return ca;
}

absl::Status PinCoordinatorCa(const std::string& pin_path, const std::string& pem) {
  absl::StatusOr<std::string> pinned = ReadFile(pin_path);
  if (pinned.ok() && *pinned == pem) return absl::OkStatus();
  if (absl::Status s = WriteFileAtomically(pin_path, pem, 0600); !s.ok()) {
    return absl::FailedPreconditionError(
        "pinning the coordinator's CA: " + std::string(s.message()) + " (set --state-dir)");
  }
  return absl::OkStatus();
}

CoordinatorClient::CoordinatorClient(const std::string& target, const std::string& ca_pem) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca_pem;
  grpc::ChannelArguments args;
  // The CA is pinned; the certificate names the coordinator, not the address it is reached by.
  args.SetSslTargetNameOverride(kCoordinatorServerName);
  // Retry a refused connection after 100 ms, but give each attempt 5 s: gRPC takes the minimum
  // reconnect backoff as the minimum connect timeout too, and a TLS handshake with a busy
  // coordinator (many members reconnecting after its restart) can take longer than 100 ms.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  channel_ = grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

CoordinatorClient::~CoordinatorClient() { CancelWatch(); }

void CoordinatorClient::Authorize(grpc::ClientContext* context) const {
  absl::MutexLock lock(&mu_);
  context->AddMetadata("authorization", "Bearer " + session_token_);
}

void CoordinatorClient::SetSessionToken(const std::string& token) {
  absl::MutexLock lock(&mu_);
  session_token_ = token;
}

absl::StatusOr<coord::RegisterResponse> CoordinatorClient::Register(coord::RegisterRequest request,
                                                                    const SecretKey& private_key,
                                                                    absl::Duration timeout,
                                                                    const TokenCheck* token_check) {
  const absl::Time deadline = absl::Now() + timeout;
  // gRPC advances a connection attempt only while some thread polls the channel, and a fail-fast
  // call on a channel in TRANSIENT_FAILURE returns at once without polling. After the coordinator
  // was unreachable once, only gRPC's backup poller (every 5 s) would drive the next attempt, and
  // it loses the race against the 5 s connect timeout, so the agent never connects again (seen
  // with real pods: agents that start before the coordinator's Service has an endpoint). Waiting
  // for the channel polls it; the fail-fast Hello below then says why it is still unreachable.
  channel_->WaitForConnected(absl::ToChronoTime(std::min(deadline, absl::Now() + kConnectWait)));
  auto stub = coord::Coordinator::NewStub(channel_);
  coord::HelloRequest hello;
  std::string nonce(32, '\0');
  RandomBytes(absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(nonce.data()), nonce.size()));
  hello.set_nonce(nonce);
  coord::HelloResponse challenge;
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    grpc::Status s = stub->Hello(&context, hello, &challenge);
    if (!s.ok()) return FromGrpc(s);
  }
  if (token_check != nullptr) {
    const bool known = absl::c_any_of(challenge.token_proofs(), [&](const std::string& proof) {
      return CheckTokenProof(token_check->join_token, nonce, token_check->ca_hash, proof);
    });
    if (!known) {
      return absl::PermissionDeniedError(
          "the coordinator (CA " + token_check->ca_hash +
          ") could not prove that it knows this join token, so the token was not sent: either "
          "the token is wrong (check --token-file) or this is not your coordinator; pass "
          "--ca-hash (printed by the operator at start and in its ca-hash file) to verify it");
    }
  }
  if (challenge.ephemeral_public_key().size() != kKeySize) {
    return absl::UnavailableError(
        "the coordinator's Hello carries no key: the coordinator is older than this agent; "
        "upgrade tunnelmesh-operator");
  }
  PublicKey coordinator_key;
  std::memcpy(coordinator_key.bytes.data(), challenge.ephemeral_public_key().data(), kKeySize);
  std::optional<ControlProof> proof =
      PossessionProof(private_key, coordinator_key, challenge.challenge(), request.mesh());
  if (!proof) {
    return absl::PermissionDeniedError(
        "the coordinator's Hello key is a low-order X25519 point, which no TunnelMesh coordinator "
        "sends: check that COORDINATOR names your coordinator (and pass --ca-hash)");
  }
  request.set_challenge(challenge.challenge());
  request.set_possession_proof(
      std::string(reinterpret_cast<const char*>(proof->data()), proof->size()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  context.set_wait_for_ready(false);
  coord::RegisterResponse response;
  grpc::Status s = stub->Register(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return response;
}

absl::Status CoordinatorClient::Watch(
    const std::function<void(const coord::MapUpdate&)>& on_update) {
  grpc::ClientContext context;
  Authorize(&context);
  {
    absl::MutexLock lock(&mu_);
    if (watch_cancelled_) return absl::CancelledError("the watch was cancelled");
    watch_context_ = &context;
  }
  auto stub = coord::Coordinator::NewStub(channel_);
  std::unique_ptr<grpc::ClientReader<coord::MapUpdate>> reader =
      stub->Watch(&context, coord::WatchRequest());
  coord::MapUpdate update;
  while (reader->Read(&update)) on_update(update);
  grpc::Status s = reader->Finish();
  {
    absl::MutexLock lock(&mu_);
    watch_context_ = nullptr;
  }
  if (s.ok()) return absl::UnavailableError("the coordinator ended the watch");
  return FromGrpc(s);
}

void CoordinatorClient::CancelWatch() {
  absl::MutexLock lock(&mu_);
  watch_cancelled_ = true;
  if (watch_context_ != nullptr) watch_context_->TryCancel();
}

absl::Status CoordinatorClient::ReportEndpoints(const coord::ReportEndpointsRequest& request) {
  grpc::ClientContext context;
  Authorize(&context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  coord::ReportEndpointsResponse response;
  return FromGrpc(
      coord::Coordinator::NewStub(channel_)->ReportEndpoints(&context, request, &response));
}

absl::Status CoordinatorClient::CallMeMaybe(const PublicKey& to,
                                            const std::vector<std::string>& endpoints) {
  grpc::ClientContext context;
  Authorize(&context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  coord::CallMeMaybeRequest request;
  request.set_to_public_key(std::string(reinterpret_cast<const char*>(to.bytes.data()), kKeySize));
  for (const std::string& e : endpoints) request.add_endpoints(e);
  coord::CallMeMaybeResponse response;
  return FromGrpc(coord::Coordinator::NewStub(channel_)->CallMeMaybe(&context, request, &response));
}

absl::Status CoordinatorClient::Leave() {
  grpc::ClientContext context;
  Authorize(&context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  coord::LeaveResponse response;
  return FromGrpc(
      coord::Coordinator::NewStub(channel_)->Leave(&context, coord::LeaveRequest(), &response));
}

template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> CoordinatorClient::Unary(Method method, const Request& request) {
  grpc::ClientContext context;
  Authorize(&context);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  Response response;
  auto stub = coord::Coordinator::NewStub(channel_);
  grpc::Status s = ((*stub).*method)(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return response;
}

absl::StatusOr<coord::ExplainResponse> CoordinatorClient::Explain(
    const coord::ExplainRequest& request) {
  return Unary<coord::ExplainResponse>(&coord::Coordinator::Stub::Explain, request);
}

absl::StatusOr<coord::AttachPodResponse> CoordinatorClient::AttachPod(
    const coord::AttachPodRequest& request) {
  return Unary<coord::AttachPodResponse>(&coord::Coordinator::Stub::AttachPod, request);
}

absl::StatusOr<coord::DetachPodResponse> CoordinatorClient::DetachPod(
    const coord::DetachPodRequest& request) {
  return Unary<coord::DetachPodResponse>(&coord::Coordinator::Stub::DetachPod, request);
}

absl::StatusOr<coord::SyncPodsResponse> CoordinatorClient::SyncPods(
    const coord::SyncPodsRequest& request) {
  return Unary<coord::SyncPodsResponse>(&coord::Coordinator::Stub::SyncPods, request);
}

}  // namespace tunnelmesh
