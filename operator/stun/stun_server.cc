// The STUN server's socket and thread. Each wake-up reads a batch of datagrams with recvmmsg,
// answers them from the lib/wire/stun.h codec into buffers allocated once, and sends the answers
// with one sendmmsg.
#include "operator/stun/stun_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "lib/base/log.h"
#include "lib/net/ip.h"
#include "lib/wire/stun.h"

namespace tunnelmesh {
namespace {

// Datagrams per recvmmsg/sendmmsg call.
constexpr size_t kBatchSize = 32;
// A Binding request is a few dozen bytes; anything longer than this is cut by the kernel, flagged
// with MSG_TRUNC and counted as malformed.
constexpr size_t kMaxDatagramSize = 1500;

// Closes a descriptor unless released; keeps Start()'s error paths short.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string ErrnoText(int err) { return std::string(strerror(err)); }

}  // namespace

absl::StatusOr<std::unique_ptr<StunServer>> StunServer::Start(const Options& options) {
  const std::string port_text = std::to_string(options.port);
  bool ipv6 = true;
  ScopedFd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0 && errno == EAFNOSUPPORT) {
    // A host booted with IPv6 disabled: serve IPv4 alone rather than nothing.
    ipv6 = false;
    fd.reset(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  }
  if (fd.get() < 0) {
    return absl::InternalError("creating the STUN server's UDP socket: " + ErrnoText(errno));
  }

  int bind_result;
  if (ipv6) {
    // Dual stack: IPv4 clients arrive as ::ffff:a.b.c.d and are answered as IPv4.
    int off = 0;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0) {
      return absl::InternalError("making the STUN server's socket dual-stack (IPV6_V6ONLY=0): " +
                                 ErrnoText(errno));
    }
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_any;
    address.sin6_port = htons(options.port);
    bind_result = bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  } else {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    address.sin_port = htons(options.port);
    bind_result = bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  }
  if (bind_result != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      return absl::FailedPreconditionError(
          "STUN UDP port " + port_text +
          " is already in use by another program; stop it or choose another port with --stun-port");
    }
    if (err == EACCES) {
      return absl::PermissionDeniedError("binding STUN UDP port " + port_text +
                                         " needs privileges this process lacks; run with "
                                         "CAP_NET_BIND_SERVICE or choose a port of 1024 or above "
                                         "with --stun-port");
    }
    return absl::InternalError("binding STUN UDP port " + port_text +
                               " (--stun-port): " + ErrnoText(err));
  }

  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) {
    return absl::InternalError("reading the STUN server's bound port: " + ErrnoText(errno));
  }
  absl::StatusOr<Endpoint> local =
      Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&bound), bound_length);
  if (!local.ok()) return local.status();

  ScopedFd wake_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (wake_fd.get() < 0) {
    return absl::InternalError("creating the STUN server's eventfd: " + ErrnoText(errno));
  }

  std::unique_ptr<StunServer> server(
      new StunServer(fd.release(), wake_fd.release(), local->port(), ipv6, options.software));
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  TM_LOG_INFO("STUN server listening port={} dual_stack={}", server->port_, ipv6);
  return server;
}

StunServer::StunServer(int fd, int wake_fd, uint16_t port, bool ipv6, std::string software)
    : fd_(fd), wake_fd_(wake_fd), port_(port), ipv6_(ipv6), software_(std::move(software)) {}

StunServer::~StunServer() {
  const uint64_t one = 1;
  // An eventfd write of 1 cannot fail short of a counter overflow, which one write never causes.
  [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(fd_);
  close(wake_fd_);
}

// One batch's datagrams and answers. Allocated once by Run() and reused: nothing is allocated per
// datagram.
struct StunServer::Buffers {
  std::array<std::array<uint8_t, kMaxDatagramSize>, kBatchSize> in;
  std::array<std::array<uint8_t, stun::kMaxEncodedSize>, kBatchSize> out;
  std::array<sockaddr_storage, kBatchSize> addresses;
  std::array<iovec, kBatchSize> in_iov;
  std::array<mmsghdr, kBatchSize> in_messages;
  std::array<iovec, kBatchSize> out_iov;
  std::array<mmsghdr, kBatchSize> out_messages;
  std::array<bool, kBatchSize> out_is_error;
};

void StunServer::Run() {
  auto buffers = std::make_unique<Buffers>();
  for (size_t i = 0; i < kBatchSize; ++i) {
    buffers->in_iov[i] = iovec{buffers->in[i].data(), buffers->in[i].size()};
    std::memset(&buffers->in_messages[i], 0, sizeof(mmsghdr));
    buffers->in_messages[i].msg_hdr.msg_iov = &buffers->in_iov[i];
    buffers->in_messages[i].msg_hdr.msg_iovlen = 1;
    buffers->in_messages[i].msg_hdr.msg_name = &buffers->addresses[i];
  }
  pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      // EINTR, or ENOMEM which passes; the other errors cannot happen with these arguments.
      continue;
    }
    if (fds[1].revents != 0) return;
    // Any event on the socket, readable or a pending error, is cleared by reading it.
    if (fds[0].revents != 0) ServeBatch(*buffers);
  }
}

void StunServer::ServeBatch(Buffers& b) {
  // The kernel overwrites these on every call.
  for (size_t i = 0; i < kBatchSize; ++i) {
    b.in_messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    b.in_messages[i].msg_hdr.msg_flags = 0;
  }
  const int received = recvmmsg(fd_, b.in_messages.data(), kBatchSize, MSG_DONTWAIT, nullptr);
  // EAGAIN: nothing after all; ECONNREFUSED and kin: a pending ICMP error, now cleared.
  if (received <= 0) return;

  const stun::EncodeOptions encode_options{software_, /*fingerprint=*/true};
  size_t answers = 0;
  for (int i = 0; i < received; ++i) {
    const mmsghdr& message = b.in_messages[i];
    if ((message.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    absl::StatusOr<Endpoint> source = Endpoint::FromSockaddr(
        reinterpret_cast<const sockaddr*>(&b.addresses[i]), message.msg_hdr.msg_namelen);
    if (!source.ok() || source->port() == 0) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    stun::BindingRequest request;
    const stun::ParseResult result =
        stun::ParseBindingRequest(stun::Bytes(b.in[i].data(), message.msg_len), &request);
    if (result == stun::ParseResult::kWrongMessageType) {
      counters_.ignored.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (result != stun::ParseResult::kOk) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    counters_.requests.fetch_add(1, std::memory_order_relaxed);

    const absl::Span<uint8_t> out = absl::MakeSpan(b.out[answers]);
    const bool is_error = request.unknown_attribute_count > 0;
    const size_t size =
        is_error ? stun::EncodeBindingErrorResponse(request, stun::kErrorUnknownAttribute,
                                                    "Unknown Attribute", encode_options, out)
                 : stun::EncodeBindingSuccessResponse(request, *source, encode_options, out);
    b.out_iov[answers] = iovec{b.out[answers].data(), size};
    std::memset(&b.out_messages[answers], 0, sizeof(mmsghdr));
    b.out_messages[answers].msg_hdr.msg_iov = &b.out_iov[answers];
    b.out_messages[answers].msg_hdr.msg_iovlen = 1;
    // Answer to the address the request came from (RFC 5389 section 7.3.1.1 and section 12.2:
    // never to an address named inside the request).
    b.out_messages[answers].msg_hdr.msg_name = &b.addresses[i];
    b.out_messages[answers].msg_hdr.msg_namelen = message.msg_hdr.msg_namelen;
    b.out_is_error[answers] = is_error;
    ++answers;
  }

  size_t next = 0;
  while (next < answers) {
    const int sent = sendmmsg(fd_, b.out_messages.data() + next, answers - next, MSG_DONTWAIT);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) {
      // The first remaining message failed: count it and go on with the rest.
      counters_.send_errors.fetch_add(1, std::memory_order_relaxed);
      ++next;
      continue;
    }
    for (int k = 0; k < sent; ++k) {
      if (b.out_is_error[next + k]) {
        counters_.error_responses.fetch_add(1, std::memory_order_relaxed);
      } else {
        counters_.responses.fetch_add(1, std::memory_order_relaxed);
      }
    }
    next += sent;
  }
}

}  // namespace tunnelmesh
