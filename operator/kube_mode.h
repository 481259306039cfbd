// tunnelmesh-operator in Kubernetes mode: cluster config, Lease leader election, the
// coordinator's keys from their Secret, the MeshPeer member store, the reconcilers
// (reconcilers/manager.h), the CoreDNS configuration (--configure-coredns) and the listeners,
// until `stop` or a lost Lease. Also the one-shot `coredns --remove`.
#pragma once

#include <atomic>
#include <cstdio>
#include <string>

#include "operator/services.h"

namespace tunnelmesh {

inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Print "tunnelmesh-operator: MESSAGE" to stderr and return the exit code for a bad flag or a
// failure; shared by both modes.
inline int Usage(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return kExitUsage;
}
inline int Fail(const std::string& message) {
  std::fprintf(stderr, "tunnelmesh-operator: %s\n", message.c_str());
  return kExitFailure;
}
// A start-up error: a usage error (2) for kInvalidArgument, else a runtime error (1).
inline int FailStart(const absl::Status& status) {
  const std::string message(status.message());
  return absl::IsInvalidArgument(status) ? Usage(message) : Fail(message);
}

// The process exit code: 0 after `stop`, kExitUsage for a bad flag (printed), kExitFailure on
// failure (printed) or when the Lease was lost. Blocks the calling thread.
int RunKubernetesMode(OperatorOptions options, const std::atomic<bool>& stop);

// `tunnelmesh-operator coredns --remove`: removes the release's server blocks from CoreDNS's
// ConfigMap (RemoveCorednsConfig), retrying errors that may pass for up to a minute. 0 when done
// or there was nothing to remove; kExitFailure (printed) otherwise; kExitUsage for bad flags.
int RunCorednsRemoval(const OperatorOptions& options);

// `delete-mesh NAME`: deletes the Mesh and waits up to --wait for the running operator to remove
// its members and finalizer; without one, removes the finalizer itself (the members' MeshPeers
// stay) so that the Mesh does not stay Terminating. The chart's pre-delete hook.
int RunMeshDeletion(const OperatorOptions& options);

}  // namespace tunnelmesh
