// UapiServer: the unix socket /var/run/wireguard/IFACE.sock through which `wg show`, `wg set`,
// `wg setconf` and wg-quick configure a userspace WireGuard implementation (wireguard-go's
// convention), speaking the protocol of uapi_protocol.h. It owns the socket file and one thread
// that serves one connection at a time (the wg tool opens one per command); the handler decides
// what a request does.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "node-agent/uapi/uapi_protocol.h"

namespace tunnelmesh::uapi {

// Where `wg` looks for userspace interfaces.
inline constexpr char kSocketDirectory[] = "/var/run/wireguard";

// DIR/INTERFACE.sock.
std::string SocketPath(const std::string& directory, const std::string& interface_name);

class UapiServer {
 public:
  // Answers one parsed request: the whole reply, "errno=..." and the empty line included (see
  // FormatGetReply, FormatErrnoReply). Runs on the server's thread.
  using Handler = std::function<std::string(Request request)>;

  // Creates `directory` (mode 0755, as wireguard-go does) if needed and listens on
  // DIR/INTERFACE.sock (mode 0600). A socket another process answers on is kAlreadyExists naming
  // the path; a stale socket file (its process was killed) is replaced.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UapiServer>> Listen(
      const std::string& directory, const std::string& interface_name, Handler handler);
  // Stops the thread and removes the socket file.
  ~UapiServer();
  UapiServer(const UapiServer&) = delete;
  UapiServer& operator=(const UapiServer&) = delete;

  const std::string& path() const { return path_; }

 private:
  UapiServer(int fd, int stop_fd, std::string path, Handler handler);
  void Serve();
  void ServeConnection(int client);

  const int fd_;
  const int stop_fd_;
  const std::string path_;
  const Handler handler_;
  std::thread thread_;
};

}  // namespace tunnelmesh::uapi
