#include "lib/dns/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A socket of `type` bound to `address`:`port`, non-blocking; `flags` name what to change when the
// address is taken; `*in_use` says whether bind failed with EADDRINUSE. IP_FREEBIND lets a mesh
// IP be bound before the interface carries it (the agent starts the server as the link comes up).
absl::StatusOr<Fd> BindSocket(const IpAddress& address, uint16_t port, int type,
                              const std::string& flags, bool* in_use) {
  const int family = address.is_v4() ? AF_INET : AF_INET6;
  Fd fd(socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const char* what = type == SOCK_DGRAM ? "UDP" : "TCP";
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  const int one = 1;
  // TCP only: a restarted agent must not wait for TIME_WAIT; on UDP it would let a second server
  // bind the same port silently.
  if (type == SOCK_STREAM) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET) {
    setsockopt(fd.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  } else {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    std::memcpy(&sin->sin_addr, address.bytes(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, address.bytes(), 16);
    len = sizeof(sockaddr_in6);
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int error = errno;
    if (in_use != nullptr) *in_use = error == EADDRINUSE;
    return absl::FailedPreconditionError(absl::StrCat(
        "mesh DNS: cannot listen on ", what, " ", Endpoint(address, port).ToString(), ": ",
        strerror(error),
        error == EADDRINUSE
            ? absl::StrCat(" (another DNS server uses it: choose another address or port with ",
                           flags, ", or run without the mesh DNS server: --no-dns)")
            : "",
        error == EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" : ""));
  }
  if (type == SOCK_STREAM && listen(fd.get(), 64) != 0) {
    return absl::InternalError(absl::StrCat("mesh DNS: listen: ", strerror(errno)));
  }
  return fd;
}

uint16_t BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

}  // namespace

namespace dns {

Reply RespondFromZones(const ZoneSet& zones, absl::Span<const uint8_t> query, Transport transport,
                       bool can_forward) {
  if (zones.size() <= 1) {
    return Respond(zones.empty() ? nullptr : zones[0].get(), query, transport, can_forward);
  }
  // Several zones: decode once to find the question's zone. A query this cannot decode, or one
  // without exactly one question, is answered by Respond the same with any zone (FORMERR, NOTIMP).
  const Zone* zone = zones[0].get();
  if (absl::StatusOr<Message> decoded = Decode(query);
      decoded.ok() && decoded->questions.size() == 1) {
    zone = nullptr;
    for (const std::shared_ptr<const Zone>& z : zones) {
      if (z->Covers(decoded->questions[0].name)) {
        zone = z.get();
        break;
      }
    }
  }
  return Respond(zone, query, transport, can_forward);
}

}  // namespace dns

struct DnsServer::Loop {
  struct Listener {
    Fd udp;
    Fd tcp;
  };
  struct Connection {
    Fd fd;
    uint64_t serial = 0;
    std::vector<uint8_t> in;
    std::vector<uint8_t> out;
    Clock::time_point last_active;
  };
  // A query sent upstream under `upstream_id`, and whom to answer.
  struct Pending {
    uint16_t client_id = 0;
    int udp_fd = -1;  // The listener's UDP socket, or -1 for a TCP client.
    sockaddr_storage client{};
    socklen_t client_len = 0;
    uint64_t connection = 0;  // Its serial, for a TCP client.
    Clock::time_point deadline;
  };

  // A TCP client's forwarded query, on a TCP connection of its own to the upstream (RFC 7766: a
  // client that asked over TCP gets the whole answer, which over UDP might come truncated). One
  // query per connection, so the client's ID needs no mapping.
  struct UpstreamTcp {
    Fd fd;
    uint64_t connection = 0;   // The client's serial.
    std::vector<uint8_t> out;  // The length-prefixed query, what is left of it to send.
    std::vector<uint8_t> in;
    Clock::time_point deadline;
  };
  // UDP queries are received (recvmmsg) and answered (sendmmsg) in batches: under load one system
  // call carries many of them, as the data plane's UDP path does.
  static constexpr size_t kUdpBatch = 32;
  static constexpr int kUdpBatchesPerWake = 4;
  // A datagram larger than this is not a query this server answers (they are a few dozen bytes).
  static constexpr size_t kMaxUdpQuery = 4096;
  struct UdpBatch {
    std::array<std::array<uint8_t, kMaxUdpQuery>, kUdpBatch> buffers;
    std::array<sockaddr_storage, kUdpBatch> from;
    std::array<iovec, kUdpBatch> in_iov;
    std::array<mmsghdr, kUdpBatch> in;
    std::array<dns::Reply, kUdpBatch> replies;
    std::array<iovec, kUdpBatch> out_iov;
    std::array<mmsghdr, kUdpBatch> out;
  };

  // Replies to a TCP client larger than this are not queued: the connection is closed.
  static constexpr size_t kMaxTcpOutput = 256 * 1024;

  DnsServer* server = nullptr;
  Fd wake;  // eventfd: Stop.
  std::vector<Listener> listeners;
  std::vector<Connection> connections;
  uint64_t next_serial = 1;
  Fd upstream_fd;
  std::optional<Endpoint> upstream;
  absl::flat_hash_map<uint16_t, Pending> pending;
  std::vector<UpstreamTcp> upstream_tcp;
  uint16_t next_upstream_id = 1;
  std::unique_ptr<UdpBatch> udp_batch = std::make_unique<UdpBatch>();
  std::atomic<bool> stop{false};
  // Accepting pauses until then after accept4 ran out of descriptors (see OnAccept).
  Clock::time_point accept_paused_until;
  std::vector<uint8_t> buffer = std::vector<uint8_t>(dns::kMaxMessageSize);

  void Run();
  // Binds UDP and TCP on every address of `options` into `listeners`; `*in_use` says whether the
  // failure (if any) was a port in use.
  absl::Status Bind(const DnsServerOptions& options, std::vector<Endpoint>* endpoints,
                    bool* in_use);
  dns::Reply Answer(absl::Span<const uint8_t> query, dns::Transport transport);
  dns::Reply Answer(const dns::ZoneSet& zones, absl::Span<const uint8_t> query,
                    dns::Transport transport);
  void Count(const dns::Reply& reply);
  void OnUdp(int fd);
  void OnAccept(int fd);
  // False when the connection is to be closed.
  bool OnReadable(Connection& c);
  bool Flush(Connection& c);
  void Queue(Connection& c, const std::vector<uint8_t>& message);
  // Sends `query` upstream for the client described by `p`; false when it cannot go.
  bool Forward(std::vector<uint8_t> query, Pending p);
  // The same for a TCP client (connection serial), over TCP.
  bool ForwardTcp(const std::vector<uint8_t>& query, uint64_t connection);
  void OnUpstream();
  // False when the upstream connection is done (answered, failed or closed).
  bool OnUpstreamTcp(UpstreamTcp& u, short events);
  Connection* FindConnection(uint64_t serial);
  void Sweep(Clock::time_point now);
};

absl::Status DnsServer::Loop::Bind(const DnsServerOptions& options,
                                   std::vector<Endpoint>* endpoints, bool* in_use) {
  uint16_t port = options.port;
  for (const IpAddress& address : options.addresses) {
    Listener l;
    absl::StatusOr<Fd> udp = BindSocket(address, port, SOCK_DGRAM, options.address_flags, in_use);
    if (!udp.ok()) return udp.status();
    // Port 0: the first socket picks it; the others (and TCP) take the same.
    if (port == 0) port = BoundPort(udp->get());
    absl::StatusOr<Fd> tcp = BindSocket(address, port, SOCK_STREAM, options.address_flags, in_use);
    if (!tcp.ok()) return tcp.status();
    l.udp = std::move(*udp);
    l.tcp = std::move(*tcp);
    listeners.push_back(std::move(l));
    endpoints->emplace_back(address, port);
  }
  return absl::OkStatus();
}

void DnsServer::Loop::Count(const dns::Reply& reply) {
  server->outcomes_[static_cast<size_t>(reply.outcome)].fetch_add(1, std::memory_order_relaxed);
  if (reply.truncated) server->truncated_.fetch_add(1, std::memory_order_relaxed);
}

dns::Reply DnsServer::Loop::Answer(absl::Span<const uint8_t> query, dns::Transport transport) {
  return Answer(*server->zones_.Load(), query, transport);
}

dns::Reply DnsServer::Loop::Answer(const dns::ZoneSet& zones, absl::Span<const uint8_t> query,
                                   dns::Transport transport) {
  dns::Reply reply = dns::RespondFromZones(zones, query, transport, upstream.has_value());
  Count(reply);
  return reply;
}

bool DnsServer::Loop::Forward(std::vector<uint8_t> query, Pending p) {
  if (pending.size() >= kMaxPendingForwards || query.size() < 2) return false;
  uint16_t id = next_upstream_id;
  while (pending.contains(id)) ++id;
  next_upstream_id = static_cast<uint16_t>(id + 1);
  p.client_id = static_cast<uint16_t>(query[0] << 8 | query[1]);
  query[0] = static_cast<uint8_t>(id >> 8);
  query[1] = static_cast<uint8_t>(id);
  sockaddr_in6 to{};
  const socklen_t to_len = upstream->ToSockaddrV6(&to);
  if (sendto(upstream_fd.get(), query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&to),
             to_len) < 0) {
    return false;
  }
  p.deadline = Clock::now() + kForwardTimeout;
  pending.emplace(id, p);
  return true;
}

bool DnsServer::Loop::ForwardTcp(const std::vector<uint8_t>& query, uint64_t connection) {
  if (pending.size() + upstream_tcp.size() >= kMaxPendingForwards) return false;
  UpstreamTcp u;
  u.fd = Fd(socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (u.fd.get() < 0) return false;
  const int zero = 0;
  setsockopt(u.fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  sockaddr_in6 to{};
  const socklen_t to_len = upstream->ToSockaddrV6(&to);
  if (connect(u.fd.get(), reinterpret_cast<sockaddr*>(&to), to_len) != 0 && errno != EINPROGRESS) {
    return false;
  }
  u.connection = connection;
  u.out.reserve(2 + query.size());
  u.out.push_back(static_cast<uint8_t>(query.size() >> 8));
  u.out.push_back(static_cast<uint8_t>(query.size()));
  u.out.insert(u.out.end(), query.begin(), query.end());
  u.deadline = Clock::now() + kForwardTimeout;
  upstream_tcp.push_back(std::move(u));
  return true;
}

DnsServer::Loop::Connection* DnsServer::Loop::FindConnection(uint64_t serial) {
  for (Connection& c : connections) {
    if (c.serial == serial && c.fd.get() >= 0) return &c;
  }
  return nullptr;
}

bool DnsServer::Loop::OnUpstreamTcp(UpstreamTcp& u, short events) {
  if ((events & (POLLERR | POLLHUP | POLLNVAL)) != 0 && (events & POLLIN) == 0) return false;
  if (!u.out.empty()) {
    if ((events & POLLOUT) == 0) return true;
    const ssize_t n = send(u.fd.get(), u.out.data(), u.out.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    u.out.erase(u.out.begin(), u.out.begin() + n);
    return true;
  }
  if ((events & POLLIN) == 0) return true;
  uint8_t chunk[4096];
  const ssize_t n = read(u.fd.get(), chunk, sizeof chunk);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  u.in.insert(u.in.end(), chunk, chunk + n);
  if (u.in.size() < 2) return true;
  const size_t length = size_t{u.in[0]} << 8 | u.in[1];
  if (u.in.size() < 2 + length) return true;
  // The answer: the client's connection gets it as it came (same ID: one query per connection).
  if (Connection* c = FindConnection(u.connection); c != nullptr && length >= 12) {
    c->out.insert(c->out.end(), u.in.begin(), u.in.begin() + static_cast<ptrdiff_t>(2 + length));
    if (!Flush(*c)) c->fd.Reset();
    u.connection = 0;  // Delivered.
  }
  return false;
}

void DnsServer::Loop::OnUdp(int fd) {
  UdpBatch& b = *udp_batch;
  for (int round = 0; round < kUdpBatchesPerWake; ++round) {
    for (size_t i = 0; i < kUdpBatch; ++i) {
      b.in_iov[i] = {b.buffers[i].data(), kMaxUdpQuery};
      b.in[i] = {};
      b.in[i].msg_hdr.msg_name = &b.from[i];
      b.in[i].msg_hdr.msg_namelen = sizeof b.from[i];
      b.in[i].msg_hdr.msg_iov = &b.in_iov[i];
      b.in[i].msg_hdr.msg_iovlen = 1;
    }
    const int received = recvmmsg(fd, b.in.data(), kUdpBatch, MSG_DONTWAIT, nullptr);
    if (received <= 0) return;
    // One look at the zones per batch (a lock and a reference count), not per query.
    const std::shared_ptr<const dns::ZoneSet> zones = server->zones_.Load();
    size_t replies = 0;
    for (size_t i = 0; i < static_cast<size_t>(received); ++i) {
      const msghdr& h = b.in[i].msg_hdr;
      if ((h.msg_flags & MSG_TRUNC) != 0) {
        server->outcomes_[static_cast<size_t>(dns::Outcome::kDropped)].fetch_add(
            1, std::memory_order_relaxed);
        continue;
      }
      dns::Reply reply = Answer(*zones, absl::MakeConstSpan(b.buffers[i].data(), b.in[i].msg_len),
                                dns::Transport::kUdp);
      if (reply.outcome == dns::Outcome::kForward) {
        Pending p;
        p.udp_fd = fd;
        p.client = b.from[i];
        p.client_len = h.msg_namelen;
        // When the upstream cannot take it now, the client retries.
        if (!Forward(std::move(reply.bytes), p)) {
          server->forward_failures_.fetch_add(1, std::memory_order_relaxed);
        }
        continue;
      }
      if (reply.bytes.empty()) continue;
      b.replies[replies] = std::move(reply);
      std::vector<uint8_t>& bytes = b.replies[replies].bytes;
      b.out_iov[replies] = {bytes.data(), bytes.size()};
      b.out[replies] = {};
      b.out[replies].msg_hdr.msg_name = &b.from[i];
      b.out[replies].msg_hdr.msg_namelen = h.msg_namelen;
      b.out[replies].msg_hdr.msg_iov = &b.out_iov[replies];
      b.out[replies].msg_hdr.msg_iovlen = 1;
      ++replies;
    }
    for (size_t sent = 0; sent < replies;) {
      const int n = sendmmsg(fd, b.out.data() + sent, static_cast<unsigned>(replies - sent), 0);
      // A reply the kernel will not take now is dropped, as a lost datagram is: the client asks
      // again.
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    // Fewer than a batch: the socket is drained, no need to ask again (and get EAGAIN).
    if (static_cast<size_t>(received) < kUdpBatch) return;
  }
}

void DnsServer::Loop::OnAccept(int fd) {
  for (;;) {
    Fd c(accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (c.get() < 0) {
      // Out of descriptors (or kernel memory): the connection stays in the backlog and the
      // listener stays readable, so polling it again at once would spin. Pause accepting (UDP and
      // open connections go on) and try again later, as the relay and the gRPC watchdog do.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (server->accept_pauses_.fetch_add(1, std::memory_order_relaxed) % 100 == 0) {
          TM_LOG_WARN("mesh DNS: accepting TCP failed ({}); pausing TCP accepts for {} ms",
                      strerror(errno), kAcceptPause.count());
        }
        accept_paused_until = Clock::now() + kAcceptPause;
      }
      return;
    }
    if (connections.size() >= kMaxTcpConnections) {
      server->tcp_refused_.fetch_add(1, std::memory_order_relaxed);
      continue;  // Closed here.
    }
    Connection conn;
    conn.fd = std::move(c);
    conn.serial = next_serial++;
    conn.last_active = Clock::now();
    connections.push_back(std::move(conn));
  }
}

void DnsServer::Loop::Queue(Connection& c, const std::vector<uint8_t>& message) {
  c.out.push_back(static_cast<uint8_t>(message.size() >> 8));
  c.out.push_back(static_cast<uint8_t>(message.size()));
  c.out.insert(c.out.end(), message.begin(), message.end());
}

bool DnsServer::Loop::OnReadable(Connection& c) {
  uint8_t chunk[4096];
  const ssize_t n = read(c.fd.get(), chunk, sizeof chunk);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  c.last_active = Clock::now();
  c.in.insert(c.in.end(), chunk, chunk + n);
  // RFC 7766: messages on a TCP connection are each preceded by a two-byte length; a client may
  // send several before reading.
  while (c.in.size() >= 2) {
    const size_t length = size_t{c.in[0]} << 8 | c.in[1];
    if (c.in.size() < 2 + length) break;
    dns::Reply reply = Answer(absl::MakeConstSpan(c.in.data() + 2, length), dns::Transport::kTcp);
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<ptrdiff_t>(2 + length));
    if (reply.outcome == dns::Outcome::kForward) {
      if (!ForwardTcp(reply.bytes, c.serial)) {
        server->forward_failures_.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    if (reply.bytes.empty()) return false;  // Not DNS: hang up.
    Queue(c, reply.bytes);
  }
  return c.out.size() <= kMaxTcpOutput && Flush(c);
}

bool DnsServer::Loop::Flush(Connection& c) {
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    c.out.erase(c.out.begin(), c.out.begin() + n);
  }
  return true;
}

void DnsServer::Loop::OnUpstream() {
  for (int burst = 0; burst < 64; ++burst) {
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = recvfrom(upstream_fd.get(), buffer.data(), buffer.size(), 0,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) return;
    absl::StatusOr<Endpoint> source =
        Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&from), from_len);
    // Only the upstream's answers to queries we sent count (no spoofed replies).
    if (!source.ok() || *source != *upstream || n < 12) continue;
    const uint16_t id = static_cast<uint16_t>(buffer[0] << 8 | buffer[1]);
    const auto it = pending.find(id);
    if (it == pending.end()) continue;
    const Pending p = it->second;
    pending.erase(it);
    buffer[0] = static_cast<uint8_t>(p.client_id >> 8);
    buffer[1] = static_cast<uint8_t>(p.client_id);
    if (p.udp_fd >= 0) {
      sendto(p.udp_fd, buffer.data(), static_cast<size_t>(n), 0,
             reinterpret_cast<const sockaddr*>(&p.client), p.client_len);
      continue;
    }
    for (Connection& c : connections) {
      if (c.serial != p.connection) continue;
      Queue(c, std::vector<uint8_t>(buffer.begin(), buffer.begin() + n));
      if (!Flush(c)) c.fd.Reset();
      break;
    }
  }
}

void DnsServer::Loop::Sweep(Clock::time_point now) {
  for (auto it = pending.begin(); it != pending.end();) {
    if (it->second.deadline <= now) {
      server->forward_failures_.fetch_add(1, std::memory_order_relaxed);
      pending.erase(it++);
    } else {
      ++it;
    }
  }
  for (UpstreamTcp& u : upstream_tcp) {
    if (u.deadline <= now) u.fd.Reset();
  }
  std::erase_if(upstream_tcp, [this](const UpstreamTcp& u) {
    if (u.fd.get() >= 0) return false;
    server->forward_failures_.fetch_add(1, std::memory_order_relaxed);
    return true;
  });
  for (Connection& c : connections) {
    if (now - c.last_active > kTcpIdleTimeout) c.fd.Reset();
  }
}

void DnsServer::Loop::Run() {
  std::vector<pollfd> fds;
  auto last_sweep = Clock::now();
  while (!stop.load(std::memory_order_acquire)) {
    // Closed connections (fd reset) go before each poll.
    std::erase_if(connections, [](const Connection& c) { return c.fd.get() < 0; });
    fds.clear();
    fds.push_back({wake.get(), POLLIN, 0});
    if (upstream_fd.get() >= 0) fds.push_back({upstream_fd.get(), POLLIN, 0});
    const size_t first_listener = fds.size();
    // While accepting is paused, the listeners are polled for nothing (events 0) and the poll
    // wakes when the pause ends.
    const auto before_poll = Clock::now();
    const bool accepting = before_poll >= accept_paused_until;
    for (const Listener& l : listeners) {
      fds.push_back({l.udp.get(), POLLIN, 0});
      fds.push_back({l.tcp.get(), static_cast<short>(accepting ? POLLIN : 0), 0});
    }
    const size_t first_connection = fds.size();
    for (const Connection& c : connections) {
      fds.push_back({c.fd.get(), static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
    }
    const size_t first_upstream_tcp = fds.size();
    for (const UpstreamTcp& u : upstream_tcp) {
      fds.push_back({u.fd.get(), static_cast<short>(u.out.empty() ? POLLIN : POLLOUT), 0});
    }
    int timeout_ms = 1000;
    if (!accepting) {
      timeout_ms = static_cast<int>(
          std::chrono::ceil<std::chrono::milliseconds>(accept_paused_until - before_poll).count());
    }
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      TM_LOG_ERROR("mesh DNS: poll failed: {}", strerror(errno));
      return;
    }
    if (upstream_fd.get() >= 0 && (fds[1].revents & POLLIN) != 0) OnUpstream();
    for (size_t i = first_listener; i < first_connection; i += 2) {
      if ((fds[i].revents & POLLIN) != 0) OnUdp(fds[i].fd);
      if ((fds[i + 1].revents & POLLIN) != 0) OnAccept(fds[i + 1].fd);
    }
    for (size_t i = first_upstream_tcp; i < fds.size(); ++i) {
      UpstreamTcp& u = upstream_tcp[i - first_upstream_tcp];
      if (fds[i].revents != 0 && !OnUpstreamTcp(u, fds[i].revents)) u.fd.Reset();
    }
    // Finished upstream connections go; one that ends without delivering is a failed forward.
    std::erase_if(upstream_tcp, [this](const UpstreamTcp& u) {
      if (u.fd.get() >= 0) return false;
      if (u.connection != 0) server->forward_failures_.fetch_add(1, std::memory_order_relaxed);
      return true;
    });
    for (size_t i = first_connection; i < first_upstream_tcp; ++i) {
      Connection& c = connections[i - first_connection];
      const short ev = fds[i].revents;
      if (ev == 0 || c.fd.get() < 0) continue;
      bool keep = true;
      if ((ev & (POLLERR | POLLHUP | POLLNVAL)) != 0 && (ev & POLLIN) == 0) keep = false;
      if (keep && (ev & POLLIN) != 0) keep = OnReadable(c);
      if (keep && (ev & POLLOUT) != 0) keep = Flush(c);
      if (!keep) c.fd.Reset();
    }
    const auto now = Clock::now();
    if (now - last_sweep >= std::chrono::seconds(1)) {
      Sweep(now);
      last_sweep = now;
    }
  }
}

DnsServer::DnsServer() = default;

void DnsServer::SetZones(dns::ZoneSet zones) {
  zones_.Store(std::make_shared<const dns::ZoneSet>(std::move(zones)));
}

void DnsServer::SetZone(std::shared_ptr<const dns::Zone> zone) {
  dns::ZoneSet zones;
  if (zone != nullptr) zones.push_back(std::move(zone));
  SetZones(std::move(zones));
}

absl::StatusOr<std::unique_ptr<DnsServer>> DnsServer::Start(DnsServerOptions options) {
  std::unique_ptr<DnsServer> server(new DnsServer());
  auto loop = std::make_unique<Loop>();
  loop->server = server.get();
  loop->wake = Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (loop->wake.get() < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  // Port 0: the first UDP socket picks a free port and every other socket takes the same one,
  // which a TCP socket (or another address) may find taken: a few fresh picks are tried then.
  constexpr int kPortPicks = 8;
  absl::Status bound;
  for (int pick = 0; pick < (options.port == 0 ? kPortPicks : 1); ++pick) {
    loop->listeners.clear();
    server->endpoints_.clear();
    bool in_use = false;
    bound = loop->Bind(options, &server->endpoints_, &in_use);
    if (bound.ok() || !in_use) break;
  }
  if (!bound.ok()) return bound;
  if (options.upstream.has_value()) {
    loop->upstream = options.upstream;
    loop->upstream_fd = Fd(socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (loop->upstream_fd.get() < 0) {
      return absl::InternalError(absl::StrCat("mesh DNS: upstream socket: ", strerror(errno)));
    }
    const int zero = 0;
    setsockopt(loop->upstream_fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  }
  server->loop_ = std::move(loop);
  Loop* raw = server->loop_.get();
  server->thread_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "tm-dns");
    raw->Run();
  });
  return server;
}

DnsServer::~DnsServer() {
  if (loop_ != nullptr) {
    loop_->stop.store(true, std::memory_order_release);
    const uint64_t one = 1;
    (void)!write(loop_->wake.get(), &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace tunnelmesh
