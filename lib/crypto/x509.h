// The coordinator's TLS identity: a private CA created on first start and a server certificate it
// issues, both ECDSA P-256, as PEM; no I/O here (the operator keeps them in files, operator/tls/,
// or a Secret). Members pin the CA by
// the hash kubeadm uses for --discovery-token-ca-cert-hash: "sha256:" followed by the hex SHA-256
// of the CA certificate's DER-encoded SubjectPublicKeyInfo. OpenSSL 3 underneath; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tunnelmesh {

// The name every coordinator certificate carries; clients verify against it (the CA is pinned, so
// the name need not match how the coordinator is reached).
inline constexpr char kCoordinatorServerName[] = "tunnelmesh-coordinator";

struct TlsIdentity {
  std::string ca_cert_pem;
  std::string server_cert_pem;  // Followed by the CA certificate, so clients receive the chain.
  std::string server_key_pem;
};

// A certificate and its private key, PEM.
struct PemPair {
  std::string cert_pem;
  std::string key_pem;
};

// A new self-signed CA (10 years).
[[nodiscard]] absl::StatusOr<PemPair> MakeCa();
// A new server certificate for kCoordinatorServerName issued by `ca` (825 days); kInvalidArgument
// when `ca` is not PEM.
[[nodiscard]] absl::StatusOr<PemPair> IssueServerCert(const PemPair& ca);

// "sha256:<64 hex digits>" of the first certificate in `pem`.
[[nodiscard]] absl::StatusOr<std::string> CaCertHash(const std::string& pem);

// Parses "sha256:<hex>"; names the expected form when it is wrong.
[[nodiscard]] absl::Status ValidateCaHash(const std::string& hash);

}  // namespace tunnelmesh
