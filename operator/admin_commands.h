// The standalone coordinator's admin surface on its host: the admin socket it serves
// (STATE_DIR/admin.sock, mode 0600; requests in operator/coordinator/admin_requests.h) and the
// subcommands that talk to it:
//   tunnelmesh-operator members --state-dir DIR [--mesh M] [--json]
//   tunnelmesh-operator remove NAME|KEY --state-dir DIR
//   tunnelmesh-operator readmit KEY --state-dir DIR      (or --list: the removed keys)
//   tunnelmesh-operator refused --state-dir DIR [--json]
// Exit codes: 0 done, 1 a runtime error (no coordinator, unknown member), 2 a usage error.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "node-agent/control/control_socket.h"
#include "operator/coordinator/admin_requests.h"

namespace tunnelmesh {

// True when argv[1] names an admin subcommand.
bool IsAdminCommand(int argc, char** argv);
// Runs it: parses its flags, asks the running coordinator, prints the answer; the exit code.
int RunAdminCommand(int argc, char** argv);

// Serves STATE_DIR/admin.sock until the returned server is destroyed (which removes the socket).
// A stale socket is replaced; one a live coordinator answers on is an error (two coordinators
// must not share a --state-dir). `requests` must outlive the server.
[[nodiscard]] absl::StatusOr<std::unique_ptr<ControlServer>> ServeAdminSocket(
    const std::string& state_dir, AdminRequests* requests);

}  // namespace tunnelmesh
