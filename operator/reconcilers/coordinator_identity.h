// The coordinator's keys in Kubernetes mode. The TLS CA (whose hash members pin) and the relay's
// key must outlive the operator's pod, so they live in a Secret in the operator's namespace,
// created on the first start; the pod's state directory is only scratch space (the files that
// LoadOrCreateTlsIdentity reads are written from the Secret). The CA certificate and its hash are
// published in a ConfigMap that agents mount (--ca-file) and that admins read to join machines
// from outside (`tunnelmesh-agent join --ca-hash`). The same Secret also holds the meshes'
// preshared keys (psk_secret_store.h); LoadOrCreateIdentity writes only its own entries and keeps
// every other one.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "operator/kube/api.h"
#include "operator/tls/tls_files.h"

namespace tunnelmesh {

struct CoordinatorIdentity {
  TlsIdentity tls;
  SecretKey relay_key;
  std::string ca_hash;
};

// A WireGuard-style private key kept in `path` (base64), created on first use.
absl::StatusOr<SecretKey> LoadOrCreateKeyFile(const std::string& path);

struct IdentityOptions {
  std::string ns;
  std::string secret_name;     // holds ca.crt, ca.key, server.crt, server.key, relay.key (and
                               // entries of others, kept as they are)
  std::string configmap_name;  // gets ca.crt and ca-hash
  std::string state_dir;       // scratch
};

absl::StatusOr<CoordinatorIdentity> LoadOrCreateIdentity(kube::Api* client,
                                                         const IdentityOptions& options);

}  // namespace tunnelmesh
