#include "node-agent/uapi/uapi_server.h"

#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

namespace tunnelmesh::uapi {
namespace {

// A client that sends nothing for this long is dropped (the thread serves one at a time), and so
// is one still connected after kConnectionLimit, however slowly it trickles bytes.
constexpr int kClientTimeoutSeconds = 2;
constexpr auto kConnectionLimit = std::chrono::seconds(10);

std::string Errno(int error) { return std::strerror(error); }

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Whether a process accepts connections on `address` (a live wireguard-go or agent).
bool SomeoneListens(const sockaddr_un& address) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool live = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return live;
}

}  // namespace

std::string SocketPath(const std::string& directory, const std::string& interface_name) {
  return directory + "/" + interface_name + ".sock";
}

absl::StatusOr<std::unique_ptr<UapiServer>> UapiServer::Listen(const std::string& directory,
                                                               const std::string& interface_name,
                                                               Handler handler) {
  const std::string path = SocketPath(directory, interface_name);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("WireGuard socket path ", path, " is too long"));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("creating ", directory, " for the WireGuard socket: ", Errno(errno)));
  }
  if (SomeoneListens(address)) {
    return absl::AlreadyExistsError(
        absl::StrCat("another process (wireguard-go or an agent) serves ", path,
                     ": stop it or pick another --interface"));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("removing the stale WireGuard socket ", path, ": ", Errno(errno)));
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("WireGuard socket: ", Errno(errno)));
  // 0600: the socket reveals and changes keys; only root may use it, as with wireguard-go.
  const mode_t old_mask = umask(0177);
  const int bound = bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  umask(old_mask);
  if (bound != 0 || listen(fd, 8) != 0) {
    const int error = errno;
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("listening on the WireGuard socket ", path, ": ", Errno(error)));
  }
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    const int error = errno;
    close(fd);
    unlink(path.c_str());
    return absl::InternalError(absl::StrCat("eventfd: ", Errno(error)));
  }
  return std::unique_ptr<UapiServer>(new UapiServer(fd, stop_fd, path, std::move(handler)));
}

UapiServer::UapiServer(int fd, int stop_fd, std::string path, Handler handler)
    : fd_(fd), stop_fd_(stop_fd), path_(std::move(path)), handler_(std::move(handler)) {
  thread_ = std::thread([this] { Serve(); });
}

UapiServer::~UapiServer() {
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(fd_);
  close(stop_fd_);
  unlink(path_.c_str());
}

void UapiServer::Serve() {
  pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      TM_LOG_ERROR("WireGuard socket {}: poll: {}", path_, Errno(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    ServeConnection(client);
    close(client);
  }
}

void UapiServer::ServeConnection(int client) {
  const timeval timeout{kClientTimeoutSeconds, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  RequestFramer framer;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + kConnectionLimit;
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    // End of stream, a timeout or an error: `wg` connects once just to see that we are alive.
    if (n <= 0) return;
    framer.Feed(std::string_view(buffer, static_cast<size_t>(n)));
    while (true) {
      absl::StatusOr<std::optional<std::vector<std::string>>> lines = framer.Next();
      if (!lines.ok()) {
        TM_LOG_WARN("WireGuard socket {}: {}; closing the connection", path_,
                    std::string(lines.status().message()));
        SendAll(client, FormatErrnoReply(ErrnoFor(lines.status())));
        return;
      }
      if (!lines->has_value()) break;
      absl::StatusOr<Request> request = ParseRequest(**lines);
      std::string reply;
      if (!request.ok()) {
        TM_LOG_WARN("WireGuard socket {}: refused a request: {}", path_,
                    std::string(request.status().message()));
        reply = FormatErrnoReply(ErrnoFor(request.status()));
      } else {
        reply = handler_(std::move(*request));
      }
      const bool sent = SendAll(client, reply);
      // A get reply carries the private and preshared keys.
      sodium_memzero(reply.data(), reply.size());
      if (!sent) return;
    }
  }
}

}  // namespace tunnelmesh::uapi
