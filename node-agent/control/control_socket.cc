#include "node-agent/control/control_socket.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "lib/base/file.h"
#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

// A request line's limit: a CNI GC lists every attachment the runtime keeps (up to 1024 container
// IDs of 64 characters and their interface names: about 110 KiB).
constexpr size_t kMaxRequest = 256 * 1024;

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("control socket path \"" + path +
                                      "\" is too long: use a shorter --state-dir");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

std::string ControlSocketPath(std::string_view state_dir, std::string_view interface_name) {
  return std::string(state_dir) + "/" + std::string(interface_name) + ".sock";
}

absl::StatusOr<std::vector<std::string>> ListControlSockets(const std::string& state_dir) {
  std::vector<std::string> interfaces;
  DIR* dir = opendir(state_dir.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return interfaces;
    return absl::UnavailableError("cannot list " + state_dir + ": " + std::strerror(errno) +
                                  (errno == EACCES ? " (run as root, or pass --state-dir)" : ""));
  }
  constexpr std::string_view kSuffix = ".sock";
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name.size() <= kSuffix.size() || name.substr(name.size() - kSuffix.size()) != kSuffix) {
      continue;
    }
    struct stat st;
    if (stat((state_dir + "/" + std::string(name)).c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      continue;
    }
    interfaces.emplace_back(name.substr(0, name.size() - kSuffix.size()));
  }
  closedir(dir);
  std::sort(interfaces.begin(), interfaces.end());
  return interfaces;
}

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Listen(const std::string& path,
                                                                     Handler handler) {
  absl::StatusOr<sockaddr_un> addr = UnixAddress(path);
  if (!addr.ok()) return addr.status();
  // 0700 when created here: the state directory also holds the node key.
  if (absl::Status s = CreatePrivateDirectories(std::filesystem::path(path).parent_path());
      !s.ok()) {
    return absl::FailedPreconditionError("creating the state directory for " + path + ": " +
                                         std::string(s.message()) + " (set --state-dir)");
  }
  if (ControlRequest(path, "ping").ok()) {
    return absl::AlreadyExistsError("another agent already serves " + path +
                                    ": pick another --interface or --state-dir");
  }
  unlink(path.c_str());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::string("control socket: ") + strerror(errno));
  mode_t old = umask(0077);
  int rc = bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  umask(old);
  if (rc != 0 || listen(fd, 16) != 0) {
    std::string err = strerror(errno);
    close(fd);
    return absl::InternalError("listening on " + path + ": " + err + " (set --state-dir)");
  }
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return std::unique_ptr<ControlServer>(new ControlServer(fd, stop_fd, path, std::move(handler)));
}

ControlServer::ControlServer(int fd, int stop_fd, std::string path, Handler handler)
    : fd_(fd), stop_fd_(stop_fd), path_(std::move(path)), handler_(std::move(handler)) {
  thread_ = std::thread([this] { Serve(); });
}

ControlServer::~ControlServer() {
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(fd_);
  close(stop_fd_);
  unlink(path_.c_str());
}

void ControlServer::Serve() {
  pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    // A slow or silent client must not wedge the agent's control thread.
    timeval timeout{2, 0};
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    std::string request;
    char buf[4096];
    while (request.size() < kMaxRequest && request.find('\n') == std::string::npos) {
      ssize_t n = recv(client, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    size_t newline = request.find('\n');
    if (newline != std::string::npos) {
      request.resize(newline);
      WriteAll(client, handler_(request));
    }
    close(client);
  }
}

absl::StatusOr<std::string> ControlRequest(const std::string& path, std::string_view request) {
  absl::StatusOr<sockaddr_un> addr = UnixAddress(path);
  if (!addr.ok()) return addr.status();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::string("socket: ") + strerror(errno));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    const int error = errno;
    std::string err = strerror(error);
    close(fd);
    if (error == EACCES || error == EPERM) {
      return absl::PermissionDeniedError("the control socket " + path +
                                         " exists but this user may not use it: run as root");
    }
    return absl::UnavailableError("no agent is listening on " + path + " (" + err +
                                  "): is it running, with this --interface and --state-dir?");
  }
  std::string line = std::string(request) + "\n";
  std::string response;
  if (WriteAll(fd, line)) {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return response;
}

}  // namespace tunnelmesh
