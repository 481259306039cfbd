// Why a TCP connection to a server failed, in the words a user acts on: "connection refused" (the
// host answers, nothing listens on the port), "timed out" (nothing answers: a firewall, a wrong
// address, the host is down), "the name did not resolve", "no route to host". Used by the agent's
// retry loops (coordinator, relay) instead of library text such as gRPC's "failed to connect to
// all addresses" or cpprestsdk's "Underlying Transport Error".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tunnelmesh {

// The words for a connect() errno: ECONNREFUSED "connection refused", ETIMEDOUT "timed out", ...
std::string ConnectErrnoWords(int error);

// The cause named in an RPC library's error text ("... Connection refused", "DNS resolution
// failed", "Deadline Exceeded", ...), or nullopt when the text names none of them.
std::optional<std::string> ConnectFailureFromText(absl::string_view text);

// Resolves `host` and tries a TCP connection to `port` for at most `timeout` (blocking the
// caller). Returns nullopt when it connected, else the words of the failure. For a log line only:
// the retry loop itself does not wait for it.
std::optional<std::string> ProbeTcpConnect(const std::string& host, uint16_t port,
                                           absl::Duration timeout);

}  // namespace tunnelmesh
