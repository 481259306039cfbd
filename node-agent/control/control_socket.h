// The agent's local control socket: a unix stream socket per interface (DIR/INTERFACE.sock, mode
// 0600) through which `tunnelmesh-agent status` and later commands talk to the running agent. One
// request line in, one response out, then the connection closes.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace tunnelmesh {

// One default for every agent mode, so `status` and `leave` find an agent started without flags:
// it holds the control sockets and, for `join`, the node key and the coordinator's CA pin.
inline constexpr char kDefaultStateDir[] = "/var/lib/tunnelmesh";

// DIR/INTERFACE.sock. Unix socket paths are shared across network namespaces, so two agents on one
// host need different interface names or state directories.
std::string ControlSocketPath(std::string_view state_dir, std::string_view interface_name);

// The interfaces of the agents with a control socket in `state_dir` (INTERFACE.sock files that are
// sockets, sorted); stale sockets of agents that were killed are listed too. An unreadable
// directory is an error naming it and the errno; a missing one lists nothing.
absl::StatusOr<std::vector<std::string>> ListControlSockets(const std::string& state_dir);

class ControlServer {
 public:
  // Handles one request (without the newline); returns the response. Runs on the server's thread.
  using Handler = std::function<std::string(std::string_view request)>;

  // Creates the directory if needed and listens on `path`. A live agent already listening there is
  // an error naming the --interface/--state-dir flags; a stale socket file is replaced.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Listen(const std::string& path,
                                                               Handler handler);
  // Stops the thread and removes the socket file.
  ~ControlServer();

 private:
  ControlServer(int fd, int stop_fd, std::string path, Handler handler);
  void Serve();

  const int fd_;
  const int stop_fd_;
  const std::string path_;
  const Handler handler_;
  std::thread thread_;
};

// Sends `request` to the agent at `path` and returns its whole response. Errors say whether an
// agent runs there.
absl::StatusOr<std::string> ControlRequest(const std::string& path, std::string_view request);

}  // namespace tunnelmesh
