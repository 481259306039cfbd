// The coordinator's STUN server (RFC 5389 Binding, no authentication): agents ask it for their
// reflexive address, the source address and port their datagrams have once they are past every
// NAT, and report that as an endpoint candidate. It answers each Binding request with the source
// address it saw, RFC 3489 clients included (RFC 5389 section 12.2), answers 420 to requests with
// comprehension-required attributes it does not understand (section 7.3.1.1), and drops and counts
// everything else. The protocol lives in lib/wire/stun.h; this file only adds the socket and the
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace tunnelmesh {

// The IANA port for STUN over UDP (RFC 5389 section 18.4).
inline constexpr uint16_t kDefaultStunPort = 3478;

// What the server has done since it started. Written by the serving thread; read from any thread.
struct StunServerCounters {
  // Well-formed Binding requests.
  std::atomic<uint64_t> requests{0};
  // Binding success responses sent.
  std::atomic<uint64_t> responses{0};
  // Binding error responses (420 Unknown Attribute) sent.
  std::atomic<uint64_t> error_responses{0};
  // Datagrams dropped because they are not a well-formed STUN message: garbage, truncated, bad
  // FINGERPRINT, bad attributes.
  std::atomic<uint64_t> malformed{0};
  // Well-formed STUN messages dropped because they are not Binding requests (Binding indications
  // that clients send as keepalives, stray responses, other methods).
  std::atomic<uint64_t> ignored{0};
  // Answers the kernel refused to send (the client's address unreachable, buffers full).
  std::atomic<uint64_t> send_errors{0};
};

class StunServer {
 public:
  struct Options {
    // UDP port on all local addresses, IPv4 and IPv6; 0 lets the kernel pick one (tests).
    uint16_t port = kDefaultStunPort;
    // SOFTWARE attribute in responses to RFC 5389 clients; empty leaves it out.
    std::string software = "tunnelmesh";
  };

  // Binds the socket and starts serving on a thread of its own. A port in use is a
  // FailedPrecondition error, a privileged port without CAP_NET_BIND_SERVICE a PermissionDenied
  // one; both messages name the port and the `--stun-port` flag.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<StunServer>> Start(const Options& options);

  // Stops the thread and closes the socket. Call from any thread but the serving one.
  ~StunServer();

  StunServer(const StunServer&) = delete;
  StunServer& operator=(const StunServer&) = delete;

  // The bound port: the one asked for, or the one the kernel picked for port 0.
  uint16_t port() const { return port_; }
  // True for the usual dual-stack IPv6 socket, which serves IPv4 clients too; false where the host
  // has no IPv6 and the server fell back to an IPv4-only socket.
  bool ipv6() const { return ipv6_; }
  const StunServerCounters& counters() const { return counters_; }

 private:
  struct Buffers;

  StunServer(int fd, int wake_fd, uint16_t port, bool ipv6, std::string software);
  // The serving loop, on thread_: waits for datagrams or the wake-up, answers in batches.
  void Run();
  // Reads one batch, answers what deserves an answer, counts the rest. Serving thread only.
  void ServeBatch(Buffers& buffers);

  const int fd_;
  const int wake_fd_;  // An eventfd the destructor writes to stop Run().
  const uint16_t port_;
  const bool ipv6_;
  const std::string software_;
  StunServerCounters counters_;
  std::thread thread_;
};

}  // namespace tunnelmesh
