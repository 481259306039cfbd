#include "node-agent/transport/ssh_transport.h"

#include <fcntl.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "node-agent/transport/ssh_framing.h"

namespace tunnelmesh {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kMaxRedialBackoff{30000};
constexpr int kPollMs = 200;

void InitLibssh() {
  static const int once = [] { return ssh_init(); }();
  (void)once;
}

long TimeoutSeconds(std::chrono::milliseconds timeout) {
  return std::max<long>(1, static_cast<long>((timeout.count() + 999) / 1000));
}

std::string SshError(void* session) { return ssh_get_error(session); }

// A listening TCP socket on `port` (0: any): IPv6 accepting IPv4 too, or IPv4 only where IPv6 is
// off. Returns the descriptor, or -errno.
int Listen(uint16_t port) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool v6 = fd >= 0;
  const int one = 1, zero = 0;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  } else {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_any;
    a->sin6_port = htons(port);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_ANY);
    a->sin_port = htons(port);
    len = sizeof(*a);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0) {
    const int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

}  // namespace

struct SshTransport::Connection {
  PublicKey peer;
  std::string name;
  bool outbound = false;
  ssh_session session = nullptr;
  ssh_channel channel = nullptr;
  int wake_fd = -1;
  Endpoint dialed;  // Outbound: the peer's address and SSH port.
  std::atomic<bool> evicted{false};
  absl::Mutex mu;
  std::deque<std::vector<uint8_t>> queue ABSL_GUARDED_BY(mu);

  ~Connection() {
    if (channel != nullptr) {
      ssh_channel_close(channel);
      ssh_channel_free(channel);
    }
    if (session != nullptr) {
      ssh_disconnect(session);
      ssh_free(session);
    }
    if (wake_fd >= 0) close(wake_fd);
  }
};

SshTransport::SshTransport(const SecretKey& node_private_key, Options options, Receive receive)
    : identity_(DeriveSshIdentity(node_private_key)),
      options_(options),
      receive_(std::move(receive)) {}

SshTransport::~SshTransport() { Stop(); }

absl::Status SshTransport::Start() {
  InitLibssh();
  absl::StatusOr<SshKeyPtr> key = ImportSshPrivateKey(identity_);
  if (!key.ok()) return key.status();
  private_key_ = *std::move(key);
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0) return absl::InternalError("SSH server: eventfd failed");

  int fd = Listen(options_.port);
  if (fd == -EADDRINUSE && options_.fall_back_to_any) {
    fd = Listen(0);
    if (fd >= 0)
      TM_LOG_INFO("TCP port {} is in use; the SSH server takes a free port", options_.port);
  }
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("SSH server: cannot listen on TCP port ", options_.port, ": ", strerror(-fd),
                     " (choose another with --ssh-port, or turn the SSH path off with --no-ssh)"));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void SshTransport::Stop() {
  if (stopping_.exchange(true)) return;
  if (stop_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<Worker> workers;
  {
    absl::MutexLock lock(&mu_);
    workers.swap(workers_);
  }
  for (Worker& w : workers) w.thread.join();
  {
    absl::MutexLock lock(&mu_);
    connections_.clear();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  listen_fd_ = stop_fd_ = -1;
}

bool SshTransport::Spawn(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  if (stopping_.load()) return false;
  // Reap finished workers so the list stays bounded by the live ones.
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  if (workers_.size() >= options_.max_connections) return false;
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back({std::thread([work = std::move(work), done] {
                        work();
                        done->store(true);
                      }),
                      done});
  return true;
}

void SshTransport::Count(uint64_t SshCounters::*counter) {
  absl::MutexLock lock(&mu_);
  ++(counters_.*counter);
}

SshCounters SshTransport::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void SshTransport::SetPeers(std::map<PublicKey, SshPeer> peers) {
  absl::MutexLock lock(&mu_);
  peer_by_ssh_key_.clear();
  for (const auto& [key, info] : peers) peer_by_ssh_key_[info.host_key] = key;
  for (auto it = connections_.begin(); it != connections_.end();) {
    auto next = peers.find(it->first);
    // A peer that left, or whose SSH key changed, loses its connections.
    auto old = peers_.find(it->first);
    if (next == peers.end() || old == peers_.end() ||
        next->second.host_key != old->second.host_key) {
      const uint64_t one = 1;
      (void)!write(it->second->wake_fd, &one, sizeof(one));
      it->second->evicted.store(true);  // RunConnection closes it.
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
  // Dial backoff is kept only for current peers.
  for (auto it = backoff_.begin(); it != backoff_.end();) {
    it = peers.count(it->first) != 0 ? std::next(it) : backoff_.erase(it);
  }
  peers_ = std::move(peers);
}

bool SshTransport::Connected(const PublicKey& peer) const {
  absl::MutexLock lock(&mu_);
  return connections_.count(peer) != 0;
}

void SshTransport::Connect(const PublicKey& peer) {
  SshPeer info;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_.load() || connections_.count(peer) != 0 || dialing_.count(peer) != 0) return;
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.port == 0 || it->second.hosts.empty()) return;
    auto b = backoff_.find(peer);
    if (b != backoff_.end() && Clock::now() < b->second.next) return;
    info = it->second;
    dialing_[peer] = true;
  }
  if (!Spawn([this, peer, info] { Dial(peer, info); })) {
    absl::MutexLock lock(&mu_);
    dialing_.erase(peer);
  }
}

bool SshTransport::Send(const PublicKey& peer, absl::Span<const uint8_t> frame) {
  std::shared_ptr<Connection> connection;
  {
    absl::MutexLock lock(&mu_);
    auto it = connections_.find(peer);
    if (it != connections_.end() && frame.size() <= kSshMaxFrame && !frame.empty()) {
      connection = it->second;
    } else {
      ++counters_.send_dropped;
      return false;
    }
  }
  {
    absl::MutexLock lock(&connection->mu);
    if (connection->queue.size() < options_.queue_frames) {
      connection->queue.emplace_back(frame.begin(), frame.end());
      const uint64_t one = 1;
      (void)!write(connection->wake_fd, &one, sizeof(one));
      return true;
    }
  }
  Count(&SshCounters::send_dropped);
  return false;
}

bool SshTransport::TakeLoginSlot(const std::string& source) {
  absl::MutexLock lock(&pending_mu_);
  size_t& from_source = pending_by_source_[source];
  if (pending_logins_ >= options_.max_pending_logins ||
      from_source >= options_.max_pending_logins_per_source) {
    if (from_source == 0) pending_by_source_.erase(source);
    return false;
  }
  ++pending_logins_;
  ++from_source;
  return true;
}

void SshTransport::ReleaseLoginSlot(const std::string& source) {
  absl::MutexLock lock(&pending_mu_);
  --pending_logins_;
  auto it = pending_by_source_.find(source);
  if (it != pending_by_source_.end() && --it->second == 0) pending_by_source_.erase(it);
}

void SshTransport::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents != 0) break;
    if ((fds[0].revents & POLLIN) == 0) continue;
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&from), &from_len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    absl::StatusOr<Endpoint> remote =
        Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&from), from_len);
    std::string source;
    if (remote.ok()) {
      // One listening socket: an IPv4 host always shows the same way (mapped or not).
      const IpAddress& ip = remote->address();
      source.assign(reinterpret_cast<const char*>(ip.bytes()), ip.byte_length());
    }
    if (!TakeLoginSlot(source)) {
      Count(&SshCounters::refused_busy);
      close(fd);
      continue;
    }
    // Datagrams must not wait for Nagle's algorithm (up to a delayed ACK, 40 ms, per ping).
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!Spawn([this, fd, source] { ServeAccepted(fd, source); })) {
      ReleaseLoginSlot(source);
      TM_LOG_WARN("SSH server: too many connections ({}); refused one", options_.max_connections);
      close(fd);
    }
  }
}

// The server side uses libssh's message API, which 0.10 marks deprecated in favour of callbacks;
// it is still supported, and keeps the handshake one readable loop.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
void SshTransport::ServeAccepted(int fd, std::string source) {
  // Until the subsystem is up (or this fails), the connection holds a pending-login slot.
  struct Pending {
    SshTransport* transport;
    std::string source;
    bool done = false;
    void Release() {
      if (!done) transport->ReleaseLoginSlot(source);
      done = true;
    }
    ~Pending() { Release(); }
  } pending{this, std::move(source)};
  auto connection = std::make_shared<Connection>();
  ssh_bind bind = ssh_bind_new();
  bool no = false;
  ssh_bind_options_set(bind, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no);
  // ssh_bind_free frees the imported key: give it a copy.
  ssh_key host_key = nullptr;
  absl::StatusOr<SshKeyPtr> copy = ImportSshPrivateKey(identity_);
  if (copy.ok()) host_key = copy->release();
  ssh_bind_options_set(bind, SSH_BIND_OPTIONS_IMPORT_KEY, host_key);
  ssh_session session = ssh_new();
  connection->session = session;
  const long timeout = TimeoutSeconds(options_.handshake_timeout);
  if (ssh_bind_accept_fd(bind, session, fd) != SSH_OK) {
    TM_LOG_DEBUG("SSH server: accept: {}", SshError(bind));
    ssh_bind_free(bind);
    close(fd);
    return;
  }
  ssh_bind_free(bind);
  ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &timeout);
  ssh_set_auth_methods(session, SSH_AUTH_METHOD_PUBLICKEY);
  if (ssh_handle_key_exchange(session) != SSH_OK) {
    TM_LOG_DEBUG("SSH server: key exchange: {}", SshError(session));
    return;
  }
  const auto deadline = Clock::now() + options_.handshake_timeout;
  bool authenticated = false;
  bool ready = false;
  while (!ready && !stopping_.load() && Clock::now() < deadline) {
    ssh_message message = ssh_message_get(session);
    if (message == nullptr) break;
    const int type = ssh_message_type(message);
    const int subtype = ssh_message_subtype(message);
    bool handled = false;
    if (type == SSH_REQUEST_AUTH && subtype == SSH_AUTH_METHOD_PUBLICKEY && !authenticated) {
      PublicKey ssh_key_raw;
      bool known = false;
      if (ExportEd25519(ssh_message_auth_pubkey(message), &ssh_key_raw)) {
        absl::MutexLock lock(&mu_);
        auto it = peer_by_ssh_key_.find(ssh_key_raw);
        if (it != peer_by_ssh_key_.end()) {
          known = true;
          connection->peer = it->second;
          connection->name = peers_.at(it->second).name;
        }
      }
      const int state = ssh_message_auth_publickey_state(message);
      if (known && state == SSH_PUBLICKEY_STATE_NONE) {
        handled = ssh_message_auth_reply_pk_ok_simple(message) == SSH_OK;
      } else if (known && state == SSH_PUBLICKEY_STATE_VALID) {
        handled = ssh_message_auth_reply_success(message, 0) == SSH_OK;
        authenticated = handled;
      } else if (!known) {
        Count(&SshCounters::unknown_clients);
        TM_LOG_WARN("SSH server: refused a login with key {} (not the SSH key of any current peer)",
                    ssh_key_raw.ToBase64());
      }
    } else if (type == SSH_REQUEST_CHANNEL_OPEN && subtype == SSH_CHANNEL_SESSION &&
               authenticated && connection->channel == nullptr) {
      connection->channel = ssh_message_channel_request_open_reply_accept(message);
      handled = connection->channel != nullptr;
    } else if (type == SSH_REQUEST_CHANNEL && subtype == SSH_CHANNEL_REQUEST_SUBSYSTEM &&
               connection->channel != nullptr) {
      const char* name = ssh_message_channel_request_subsystem(message);
      if (name != nullptr && std::strcmp(name, kSshSubsystem) == 0) {
        handled = ssh_message_channel_request_reply_success(message) == SSH_OK;
        ready = handled;
      }
    }
    if (!handled) {
      if (type == SSH_REQUEST_AUTH)
        ssh_message_auth_set_methods(message, SSH_AUTH_METHOD_PUBLICKEY);
      ssh_message_reply_default(message);
    }
    ssh_message_free(message);
  }
  if (!ready) return;
  pending.Release();
  connection->outbound = false;
  RunConnection(connection);
}
#pragma GCC diagnostic pop

void SshTransport::Dial(PublicKey peer, SshPeer info) {
  bool host_key_mismatch = false;
  std::shared_ptr<Connection> connection;
  absl::StatusOr<SshKeyPtr> expected = ImportSshPublicKey(info.host_key);
  for (const IpAddress& host : info.hosts) {
    if (stopping_.load() || !expected.ok()) break;
    auto c = std::make_shared<Connection>();
    c->peer = peer;
    c->name = info.name;
    c->outbound = true;
    c->dialed = Endpoint(host, info.port);
    c->session = ssh_new();
    const std::string address = host.ToString();
    const unsigned int port = info.port;
    const long timeout = TimeoutSeconds(options_.handshake_timeout);
    bool no = false;
    ssh_options_set(c->session, SSH_OPTIONS_HOST, address.c_str());
    ssh_options_set(c->session, SSH_OPTIONS_PORT, &port);
    ssh_options_set(c->session, SSH_OPTIONS_USER, "tunnelmesh");
    ssh_options_set(c->session, SSH_OPTIONS_TIMEOUT, &timeout);
    ssh_options_set(c->session, SSH_OPTIONS_PROCESS_CONFIG, &no);
    ssh_options_set(c->session, SSH_OPTIONS_HOSTKEYS, "ssh-ed25519");
    ssh_options_set(c->session, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(c->session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    const int nodelay = 1;
    ssh_options_set(c->session, SSH_OPTIONS_NODELAY, &nodelay);
    // Through a jump host: OpenSSH's ProxyCommand, %h and %p expanded by libssh. The peer's host
    // key is checked the same way, end to end.
    if (!options_.proxy_command.empty()) {
      ssh_options_set(c->session, SSH_OPTIONS_PROXYCOMMAND, options_.proxy_command.c_str());
    }
    if (ssh_connect(c->session) != SSH_OK) {
      TM_LOG_DEBUG("SSH to {} at {}:{}: {}", info.name, address, port, SshError(c->session));
      continue;
    }
    // The host key must be the one the network map publishes for this peer: nothing else, and
    // never a key first seen now.
    ssh_key server_key = nullptr;
    const bool same = ssh_get_server_publickey(c->session, &server_key) == SSH_OK &&
                      ssh_key_cmp(server_key, expected->get(), SSH_KEY_CMP_PUBLIC) == 0;
    PublicKey seen;
    const bool ed25519 = ExportEd25519(server_key, &seen);
    ssh_key_free(server_key);
    if (!same) {
      host_key_mismatch = true;
      Count(&SshCounters::host_key_mismatches);
      TM_LOG_WARN(
          "SSH to {} at {}:{} refused: its host key {} is not the key the network map publishes "
          "for it ({}); something else answers on that port",
          info.name, address, port, ed25519 ? seen.ToBase64() : std::string("(not Ed25519)"),
          info.host_key.ToBase64());
      continue;
    }
    if (ssh_userauth_publickey(c->session, nullptr, private_key_.get()) != SSH_AUTH_SUCCESS) {
      TM_LOG_WARN("SSH to {} at {}:{}: the peer refused our login (does its map list us yet?)",
                  info.name, address, port);
      continue;
    }
    c->channel = ssh_channel_new(c->session);
    if (c->channel == nullptr || ssh_channel_open_session(c->channel) != SSH_OK ||
        ssh_channel_request_subsystem(c->channel, kSshSubsystem) != SSH_OK) {
      TM_LOG_WARN("SSH to {} at {}:{}: no \"{}\" channel: {}", info.name, address, port,
                  kSshSubsystem, SshError(c->session));
      continue;
    }
    connection = std::move(c);
    break;
  }
  {
    absl::MutexLock lock(&mu_);
    dialing_.erase(peer);
    Backoff& b = backoff_[peer];
    if (connection) {
      b = Backoff();
    } else {
      ++counters_.dial_failures;
      b.delay = std::min(kMaxRedialBackoff, std::max(options_.redial_backoff, b.delay * 2));
      b.next = Clock::now() + b.delay;
    }
  }
  if (!connection) {
    if (!host_key_mismatch) TM_LOG_DEBUG("SSH to {}: no host answered", info.name);
    return;
  }
  RunConnection(connection);
}

void SshTransport::RunConnection(const std::shared_ptr<Connection>& connection) {
  connection->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  {
    absl::MutexLock lock(&mu_);
    if (stopping_.load() || connection->wake_fd < 0 || !peers_.count(connection->peer)) return;
    connections_.emplace(connection->peer, connection);
    ++counters_.connects;
  }
  const PublicKey peer = connection->peer;
  // The TCP remote end; through a proxy command (a pipe) the address dialed instead.
  Endpoint remote = connection->dialed;
  {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (getpeername(ssh_get_fd(connection->session), reinterpret_cast<sockaddr*>(&addr), &len) ==
        0) {
      absl::StatusOr<Endpoint> parsed =
          Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
      if (parsed.ok()) remote = *parsed;
    }
  }
  TM_LOG_INFO("SSH connection with {} up ({})", connection->name,
              connection->outbound ? "dialed" : "accepted");
  ssh_set_blocking(connection->session, 1);
  SshFrameReader reader(kSshMaxFrame);
  std::vector<uint8_t> out;
  std::deque<std::vector<uint8_t>> batch;
  std::vector<uint8_t> in(65536);
  auto last_activity = Clock::now();
  std::string why = "closed by the peer";
  for (;;) {
    const int fd = ssh_get_fd(connection->session);
    const bool buffered = ssh_channel_poll(connection->channel, 0) > 0;
    pollfd fds[3] = {{fd, POLLIN, 0}, {connection->wake_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 3, buffered ? 0 : kPollMs) < 0 && errno != EINTR) {
      why = "poll failed";
      break;
    }
    if (stopping_.load()) {
      why = "shutting down";
      break;
    }
    if (connection->evicted.load()) {
      why = "the peer left the map or changed its SSH key";
      break;
    }
    uint64_t ignored;
    (void)!read(connection->wake_fd, &ignored, sizeof(ignored));
    {
      absl::MutexLock lock(&connection->mu);
      batch.swap(connection->queue);
    }
    out.clear();
    for (const std::vector<uint8_t>& frame : batch) AppendSshFrame(frame, &out);
    batch.clear();
    if (!out.empty()) {
      if (ssh_channel_write(connection->channel, out.data(), static_cast<uint32_t>(out.size())) !=
          static_cast<int>(out.size())) {
        why = "write failed: " + SshError(connection->session);
        break;
      }
      last_activity = Clock::now();
    }
    bool failed = false;
    for (;;) {
      const int n = ssh_channel_read_nonblocking(connection->channel, in.data(),
                                                 static_cast<uint32_t>(in.size()), 0);
      if (n == SSH_ERROR) {
        why = "read failed: " + SshError(connection->session);
        failed = true;
        break;
      }
      if (n <= 0) break;
      last_activity = Clock::now();
      if (!reader.Feed(absl::Span<const uint8_t>(in.data(), static_cast<size_t>(n)),
                       [&](absl::Span<const uint8_t> frame) { receive_(peer, remote, frame); })) {
        Count(&SshCounters::stream_errors);
        why = "malformed frame stream";
        failed = true;
        break;
      }
    }
    if (failed) break;
    if (ssh_channel_is_eof(connection->channel) || ssh_channel_is_closed(connection->channel)) {
      break;
    }
    if (Clock::now() - last_activity > options_.idle_timeout) {
      why = "idle";
      break;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    for (auto it = connections_.begin(); it != connections_.end(); ++it) {
      if (it->second == connection) {
        connections_.erase(it);
        break;
      }
    }
  }
  TM_LOG_INFO("SSH connection with {} down: {}", connection->name, why);
}

}  // namespace tunnelmesh
