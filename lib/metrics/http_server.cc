#include "lib/metrics/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "lib/metrics/http.h"

namespace tunnelmesh::metrics {
namespace {

using SteadyClock = std::chrono::steady_clock;

// How long accepts pause when the process is out of descriptors, instead of spinning on the
// still-readable listener.
constexpr std::chrono::milliseconds kAcceptPause{100};

struct Connection {
  int fd = -1;
  std::string in;
  std::string out;
  size_t written = 0;
  bool answering = false;
  SteadyClock::time_point deadline;
};

absl::Status BindError(int error, const Endpoint& address, const std::string& flag,
                       const std::string& disable_flag) {
  const std::string off =
      disable_flag.empty() ? std::string() : ", or turn metrics off with " + disable_flag;
  if (error == EADDRINUSE) {
    return absl::AlreadyExistsError("metrics: TCP " + address.ToString() +
                                    " is already in use: stop what holds it (ss -ltnp 'sport = :" +
                                    std::to_string(address.port()) +
                                    "') or choose another address or port with " + flag + off);
  }
  if (error == EADDRNOTAVAIL) {
    return absl::FailedPreconditionError("metrics: " + address.address().ToString() +
                                         " is not an address of this host: check " + flag + off);
  }
  return absl::UnavailableError("metrics: cannot listen on TCP " + address.ToString() + ": " +
                                std::strerror(error) + " (" + flag + off + ")");
}

}  // namespace

absl::StatusOr<Endpoint> ParseListenAddress(std::string_view text, std::string_view flag) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(std::string(flag) + " \"" + std::string(text) + "\" " +
                                      std::string(why) +
                                      ": expected IP:PORT, an IPv6 address in brackets (like "
                                      "127.0.0.1:PORT or [::1]:PORT; port 0 picks a free one)");
  };
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("has no port after the bracketed address");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("has no port");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) return bad("needs brackets around IPv6");
    port_text = text.substr(colon + 1);
  }
  absl::StatusOr<IpAddress> address = IpAddress::Parse(host);
  if (!address.ok()) return bad("does not start with an IP address (names are not resolved)");
  uint32_t port = 0;
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad("has no port number from 0 to 65535");
  }
  for (char c : port_text) port = port * 10 + static_cast<uint32_t>(c - '0');
  if (port > 65535) return bad("has no port number from 0 to 65535");
  return Endpoint(*address, static_cast<uint16_t>(port));
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const Endpoint& address,
                                                                    std::string_view flag,
                                                                    std::string_view disable_flag,
                                                                    Render render,
                                                                    ServerLimits limits) {
  const bool v4 = address.address().family() == IpAddress::Family::kV4;
  const int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const std::string flag_name(flag);
  const std::string disable_name(disable_flag);
  if (fd < 0) return BindError(errno, address, flag_name, disable_name);
  const int one = 1;
  // Restarting an agent must not wait for TIME_WAIT connections of the last scrape; unlike
  // SO_REUSEPORT this still refuses a second listener.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (v4) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(address.port());
    std::memcpy(&sin.sin_addr, address.address().bytes(), 4);
    std::memcpy(&storage, &sin, sizeof(sin));
    length = sizeof(sin);
  } else {
    const int zero = 0;
    // "[::]" takes IPv4 connections too.
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 sin6{};
    length = address.ToSockaddrV6(&sin6);
    std::memcpy(&storage, &sin6, length);
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0 || listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return BindError(error, address, flag_name, disable_name);
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_length);
  absl::StatusOr<Endpoint> endpoint =
      Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&bound), bound_length);
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!endpoint.ok() || stop_fd < 0) {
    close(fd);
    if (stop_fd >= 0) close(stop_fd);
    return absl::InternalError("metrics: cannot set up the listener on " + address.ToString() +
                               " (" + flag_name + ")");
  }
  std::unique_ptr<MetricsServer> server(
      new MetricsServer(fd, stop_fd, *endpoint, std::move(render), limits));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

MetricsServer::MetricsServer(int listen_fd, int stop_fd, Endpoint endpoint, Render render,
                             ServerLimits limits)
    : listen_fd_(listen_fd),
      stop_fd_(stop_fd),
      endpoint_(endpoint),
      render_(std::move(render)),
      limits_(limits) {}

MetricsServer::~MetricsServer() {
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(stop_fd_);
}

void MetricsServer::Serve() {
  std::vector<Connection> connections;
  SteadyClock::time_point accept_resume{};
  std::vector<pollfd> fds;
  char buffer[4096];
  while (true) {
    const SteadyClock::time_point now = SteadyClock::now();
    fds.clear();
    fds.push_back({stop_fd_, POLLIN, 0});
    const bool accepting = now >= accept_resume;
    fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    SteadyClock::time_point wake = accepting ? SteadyClock::time_point::max() : accept_resume;
    for (const Connection& c : connections) {
      fds.push_back({c.fd, static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
      wake = std::min(wake, c.deadline);
    }
    int timeout_ms = -1;
    if (wake != SteadyClock::time_point::max()) {
      timeout_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(
                                        std::max(wake - now, SteadyClock::duration{}))
                                        .count());
    }
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) break;
    const SteadyClock::time_point after = SteadyClock::now();
    // Connections first (their indexes in fds are stable until accept appends).
    std::vector<Connection> kept;
    kept.reserve(connections.size());
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      const short revents = fds[i + 2].revents;
      bool done = false;
      if (!c.answering && (revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t n = recv(c.fd, buffer, sizeof(buffer), 0);
        if (n > 0) {
          c.in.append(buffer, static_cast<size_t>(n));
          const ParsedHead head = ParseRequestHead(c.in, limits_.max_request_head);
          if (head.state != HeadState::kIncomplete) {
            const HttpResponse response = Answer(head, "/metrics", render_);
            (response.status == 200   ? scrapes_
             : response.status == 503 ? unavailable_
                                      : bad_requests_)
                .fetch_add(1, std::memory_order_relaxed);
            c.out = SerializeResponse(response);
            c.in.clear();
            c.answering = true;
            c.deadline = after + limits_.write_timeout;
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          done = true;  // Closed before a whole head arrived.
        }
      }
      if (c.answering && !done) {
        const ssize_t n =
            send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) c.written += static_cast<size_t>(n);
        if (c.written == c.out.size() || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          done = true;
        }
      }
      if (!done && after >= c.deadline) {
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        done = true;
      }
      if (done) {
        close(c.fd);
      } else {
        kept.push_back(std::move(c));
      }
    }
    connections = std::move(kept);
    if (accepting && (fds[1].revents & POLLIN) != 0) {
      while (true) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE) accept_resume = after + kAcceptPause;
          break;
        }
        if (connections.size() >= limits_.max_connections) {
          refused_.fetch_add(1, std::memory_order_relaxed);
          const std::string busy = SerializeResponse(ErrorResponse(503));
          (void)!send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          close(fd);
          continue;
        }
        connections.push_back({fd, {}, {}, 0, false, after + limits_.read_timeout});
      }
    }
  }
  for (const Connection& c : connections) close(c.fd);
}

}  // namespace tunnelmesh::metrics
