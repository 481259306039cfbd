#include "operator/tls/tls_files.h"

#include <filesystem>

#include "lib/base/file.h"

namespace tunnelmesh {
namespace {

// Writes a certificate and its key; the key first, so a certificate never exists without it.
absl::Status WritePair(const PemPair& pair, const std::string& cert_path,
                       const std::string& key_path) {
  if (absl::Status s = WriteFileAtomically(key_path, pair.key_pem, 0600); !s.ok()) return s;
  return WriteFileAtomically(cert_path, pair.cert_pem, 0644);
}

}  // namespace

absl::StatusOr<TlsIdentity> LoadOrCreateTlsIdentity(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string ca_crt = dir + "/ca.crt", ca_key = dir + "/ca.key";
  const std::string srv_crt = dir + "/server.crt", srv_key = dir + "/server.key";
  // 0700: it holds the CA's and the server's private keys.
  if (absl::Status s = CreatePrivateDirectories(dir); !s.ok()) {
    return absl::FailedPreconditionError(std::string(s.message()) + " (check --state-dir)");
  }
  bool new_ca = false;
  if (!fs::exists(ca_crt) || !fs::exists(ca_key)) {
    absl::StatusOr<PemPair> ca = MakeCa();
    if (!ca.ok()) return ca.status();
    if (absl::Status s = WritePair(*ca, ca_crt, ca_key); !s.ok()) return s;
    new_ca = true;
  }
  absl::StatusOr<std::string> ca_cert = ReadFile(ca_crt);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<std::string> ca_private = ReadFile(ca_key);
  if (!ca_private.ok()) return ca_private.status();
  const PemPair ca{*ca_cert, *ca_private};
  if (new_ca || !fs::exists(srv_crt) || !fs::exists(srv_key)) {
    absl::StatusOr<PemPair> server = IssueServerCert(ca);
    if (!server.ok()) {
      return absl::DataLossError(ca_crt + " or " + ca_key +
                                 " is not valid PEM: move both away to create a new CA (members "
                                 "must then be given the new --ca-hash)");
    }
    if (absl::Status s = WritePair(*server, srv_crt, srv_key); !s.ok()) return s;
  }
  absl::StatusOr<std::string> server_cert = ReadFile(srv_crt);
  if (!server_cert.ok()) return server_cert.status();
  absl::StatusOr<std::string> server_key = ReadFile(srv_key);
  if (!server_key.ok()) return server_key.status();
  if (!CaCertHash(ca.cert_pem).ok()) {
    return absl::DataLossError(ca_crt + " is not a valid PEM certificate: move " + ca_crt +
                               " and " + ca_key +
                               " away to create a new CA (members must then "
                               "be given the new --ca-hash)");
  }
  return TlsIdentity{ca.cert_pem, *server_cert + ca.cert_pem, *server_key};
}

}  // namespace tunnelmesh
