// The coordinator's TLS identity kept as files in a directory (standalone mode's state directory;
// scratch space in Kubernetes mode, where the Secret is the original): ca.crt and ca.key, then
// server.crt and server.key issued by that CA. Created on first use with lib/crypto/x509.h; keys
// are written atomically with mode 0600 from creation (never readable by others, not even for a
// moment), certificates 0644.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "lib/crypto/x509.h"

namespace tunnelmesh {

// Loads DIR/ca.crt, DIR/ca.key, DIR/server.crt and DIR/server.key, creating the CA and the server
// certificate when missing (a new CA also gets a new server certificate). kDataLoss, naming the
// files to move away, when they are not valid PEM.
[[nodiscard]] absl::StatusOr<TlsIdentity> LoadOrCreateTlsIdentity(const std::string& dir);

}  // namespace tunnelmesh
