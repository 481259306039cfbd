// The coordinator's TLS identity: a private CA created on first start and a server certificate it
// issues, both ECDSA P-256, kept as PEM in the coordinator's state directory. Members pin the CA by
// the hash kubeadm uses for --discovery-token-ca-cert-hash: "sha256:" followed by the hex SHA-256 of
// the CA certificate's DER-encoded SubjectPublicKeyInfo. OpenSSL 3 underneath; thread-safe.
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

// Loads DIR/ca.crt, DIR/server.crt and DIR/server.key, creating the CA (ca.key kept beside it,
// mode 0600) and the server certificate on first use.
absl::StatusOr<TlsIdentity> LoadOrCreateTlsIdentity(const std::string& dir);

// "sha256:<64 hex digits>" of the first certificate in `pem`.
absl::StatusOr<std::string> CaCertHash(const std::string& pem);

// Parses "sha256:<hex>"; names the expected form when it is wrong.
absl::Status ValidateCaHash(const std::string& hash);

}  // namespace tunnelmesh
