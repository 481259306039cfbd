// The SSH path (docs/protocol.md, "SSH path"): for peers whose UDP is blocked but whose TCP is
// open, datagrams travel over an SSH connection straight to the peer instead of the relay. libssh
// does the SSH; this class runs the server every agent offers (TCP port 7722 by default) and the
// client connections it dials, and moves length-prefixed frames (ssh_framing.h) over one channel
// per connection (subsystem "tunnelmesh"). The frames are WireGuard and discovery messages sealed
// exactly as on UDP: SSH adds a second layer, never a plaintext one.
//
// Trust: both ends use the member's SSH identity (ssh_key.h, derived from the node key). A client
// accepts a server only if its host key equals the key the network map publishes for that peer
// (SetPeers), never trust-on-first-use; the server accepts a login only with the key of a current
// map peer, which also tells it which peer connected. Anything else is refused and counted.
//
// Threads: one accept thread, and one thread per connection (handshake, then its data loop:
// poll on the socket and the connection's send queue). Send and Connected from any thread; the
// rest from the owner's (control) thread. Received frames go to the Receive callback on the
// connection's thread; it must not block for long. Each connection's send queue is bounded (full:
// Send drops and counts, as a socket buffer would). No lock is held across I/O.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "node-agent/transport/ssh_key.h"

namespace tunnelmesh {

inline constexpr uint16_t kDefaultSshPort = 7722;
inline constexpr char kSshSubsystem[] = "tunnelmesh";

// What the map says about a peer's SSH server.
struct SshPeer {
  std::string name;              // For logs.
  PublicKey host_key;            // Its Ed25519 SSH key (host key and login key).
  uint16_t port = 0;             // Its SSH port.
  std::vector<IpAddress> hosts;  // Addresses to dial, in order (its endpoints' hosts).
};

struct SshCounters {
  uint64_t connects = 0;             // Connections established (either direction).
  uint64_t dial_failures = 0;        // Dials that reached no usable server.
  uint64_t host_key_mismatches = 0;  // Servers whose host key was not the published one.
  uint64_t unknown_clients = 0;      // Logins with a key of no current peer.
  uint64_t send_dropped = 0;         // Frames dropped: no connection, queue full, or too large.
  uint64_t stream_errors = 0;        // Connections closed for a malformed frame stream.
  uint64_t refused_busy = 0;         // Accepted connections closed: too many logins pending
                                     // (in all, or from their source address).
};

class SshTransport {
 public:
  struct Options {
    // TCP port to listen on (0: any free port, for tests; port() says which).
    uint16_t port = kDefaultSshPort;
    // When `port` is taken (another agent on this host), listen on a free port instead; the
    // registration tells peers which. As the UDP port does.
    bool fall_back_to_any = false;
    // Frames waiting per connection; beyond this Send drops.
    size_t queue_frames = 1024;
    // Connections at once (both directions); beyond this new ones are refused.
    size_t max_connections = 128;
    // Accepted connections still in their handshake or login; beyond this new ones are closed at
    // once, so that whoever can reach the port cannot take every thread (dials keep working).
    size_t max_pending_logins = 16;
    // Of those, from one source address: one host alone cannot hold every slot.
    size_t max_pending_logins_per_source = 4;
    // Per dial attempt and for the server's handshake and login.
    std::chrono::milliseconds handshake_timeout{3000};
    // A connection with nothing sent or received for this long closes.
    std::chrono::milliseconds idle_timeout{15000};
    // Dial every peer through this command instead of a TCP connection, as OpenSSH's ProxyCommand
    // (`%h`, `%p`: the peer's address and SSH port), typically an OpenSSH jump host:
    // `ssh -W [%h]:%p user@jump` (its direct-tcpip channel). Empty: connect directly.
    std::string proxy_command;
    // After a failed dial, the next waits this long, doubling up to 30 s.
    std::chrono::milliseconds redial_backoff{1000};
  };
  // A frame from `peer` (its node public key) over the connection whose TCP remote end is
  // `remote`, on a connection's thread.
  using Receive = std::function<void(const PublicKey& peer, const Endpoint& remote,
                                     absl::Span<const uint8_t> frame)>;

  SshTransport(const SecretKey& node_private_key, Options options, Receive receive);
  ~SshTransport();
  SshTransport(const SshTransport&) = delete;
  SshTransport& operator=(const SshTransport&) = delete;

  // Listens (IPv6 socket accepting IPv4 too, or IPv4 only where IPv6 is off) and starts the
  // accept thread. Names the port when it is taken.
  [[nodiscard]] absl::Status Start();
  // Closes every connection and joins every thread. Idempotent.
  void Stop();

  // The peers that may log in and that may be dialed, by node public key (replaces the last set).
  // Connections of peers no longer in it close.
  void SetPeers(std::map<PublicKey, SshPeer> peers);
  // Dials `peer` in the background unless a connection exists, a dial runs, or the backoff after
  // a failed one has not passed.
  void Connect(const PublicKey& peer);
  bool Connected(const PublicKey& peer) const;
  // Queues one frame to `peer`; false (counted) when there is no connection or its queue is full.
  bool Send(const PublicKey& peer, absl::Span<const uint8_t> frame);

  const PublicKey& public_key() const { return identity_.public_key; }
  uint16_t port() const { return port_; }
  SshCounters counters() const;

 private:
  struct Connection;

  void AcceptLoop();
  void ServeAccepted(int fd, std::string source);
  // Takes a pending-login slot for `source` (raw address bytes); false when none is free.
  bool TakeLoginSlot(const std::string& source) ABSL_LOCKS_EXCLUDED(pending_mu_);
  void ReleaseLoginSlot(const std::string& source) ABSL_LOCKS_EXCLUDED(pending_mu_);
  void Dial(PublicKey peer, SshPeer info);
  // Registers an established connection and runs its data loop until it ends.
  void RunConnection(const std::shared_ptr<Connection>& connection);
  // Starts a worker thread (reaping finished ones); false when stopping or at max_connections.
  bool Spawn(std::function<void()> work);
  void Count(uint64_t SshCounters::*counter);

  const SshIdentity identity_;
  const Options options_;
  const Receive receive_;
  SshKeyPtr private_key_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // An eventfd, readable once Stop begins.
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  // Logins in progress, in all and by source address: the accept thread takes a slot, the
  // connection's thread gives it back.
  absl::Mutex pending_mu_;
  size_t pending_logins_ ABSL_GUARDED_BY(pending_mu_) = 0;
  std::map<std::string, size_t> pending_by_source_ ABSL_GUARDED_BY(pending_mu_);

  mutable absl::Mutex mu_;
  std::map<PublicKey, SshPeer> peers_ ABSL_GUARDED_BY(mu_);
  std::map<PublicKey, PublicKey> peer_by_ssh_key_ ABSL_GUARDED_BY(mu_);
  std::multimap<PublicKey, std::shared_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  std::map<PublicKey, bool> dialing_ ABSL_GUARDED_BY(mu_);
  struct Backoff {
    std::chrono::steady_clock::time_point next;
    std::chrono::milliseconds delay{0};
  };
  std::map<PublicKey, Backoff> backoff_ ABSL_GUARDED_BY(mu_);
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);
  SshCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
