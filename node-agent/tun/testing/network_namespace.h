// Test helper: moves the calling thread into a fresh, empty network namespace (loopback up), so a
// test can create TUN devices, addresses and routes without touching the host or tests running in
// parallel. Sockets and child processes (e.g. `ip`) created afterwards by this thread live there.
#pragma once

#include "absl/status/status.h"

namespace tunnelmesh {

// kPermissionDenied when the process may not create namespaces (not root, no CAP_SYS_ADMIN):
// callers skip the test then. Each call leaves the previous test namespace behind; it is freed
// once nothing (a socket, a TUN descriptor) refers to it any more.
[[nodiscard]] absl::Status EnterNewNetworkNamespace();

}  // namespace tunnelmesh
