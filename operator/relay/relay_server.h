// The coordinator's WebSocket relay: agents that cannot reach each other directly send their
// (already end-to-end encrypted) WireGuard and discovery messages here, addressed by public key,
// and the relay forwards them (lib/wire/relay_frame.h has the protocol; RelayHub the rules).
// WebSocket over TLS (wss://) on its own port (default 7701, `--relay-port`); path /relay. The
// certificate is the coordinator's own (TlsIdentity, the name kCoordinatorServerName), so agents
// check it against the CA they already pinned for gRPC. A client speaking plain HTTP (an agent
// from before TLS, dialing ws://) gets a one-line HTTP answer saying so, and is closed.
//
// Each connection must finish TLS, the upgrade, and answer the Challenge with a valid Hello within
// `auth_timeout`, and pass the injected membership check. Caps on connections (in all, per source
// IP, and not yet authenticated) keep the relay's descriptors well below the process's limit:
// a connection over a cap is closed right after accept and counted. Every connection has a bounded
// outbound queue, and all of them together a byte budget: when a destination reads too slowly its
// frames are dropped and counted, and no other client waits for it.
//
// Boost.Beast lives only in relay_server.cc (it costs ~30 s a translation unit to compile).
//
// Thread-safety: all network work runs on one I/O thread the server owns. Start/Listen and the
// destructor are called from the owner's thread; port(), public_key() and counters() from any
// thread. The membership check runs on the I/O thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "operator/relay/relay_hub.h"

namespace tunnelmesh {

inline constexpr int kDefaultRelayPort = 7701;

class RelayServer {
 public:
  using MembershipCheck = RelayHub::MembershipCheck;

  struct Options {
    // Address to listen on; "0.0.0.0" for all IPv4 addresses, "::" for IPv6 (and IPv4-mapped).
    std::string listen_address = "0.0.0.0";
    // The HTTP path of the WebSocket upgrade; other paths get 404.
    std::string path = "/relay";
    // From TCP accept until Ready: the WebSocket upgrade and a valid Hello must happen within it.
    std::chrono::milliseconds auth_timeout{5000};
    // A connection silent this long is pinged; one silent for twice as long is closed.
    std::chrono::milliseconds idle_timeout{30000};
    // Deliver frames waiting to be written to one connection before new ones are dropped.
    size_t max_queued_frames = 512;
    // Messages up to this size are read and dropped as oversized, keeping the connection; a
    // longer one closes it (the WebSocket library refuses it).
    size_t max_message_size = 1 << 20;
    // Bytes of Deliver frames waiting in all outbound queues together; a frame that would exceed
    // it is dropped (each queue also holds at most max_queued_frames).
    size_t max_queued_bytes = 64 << 20;
    // Connection caps, each closing a connection over it right after accept (see the header
    // comment). Listen lowers them to half the process's descriptor limit (RLIMIT_NOFILE) when
    // that is smaller, leaving the rest to gRPC and files.
    size_t max_connections = 4096;           // --relay-max-connections
    size_t max_connections_per_source = 64;  // --relay-max-connections-per-source
    size_t max_pending_connections = 256;    // --relay-max-pending-connections
    // Per-session rate limits on Send frames.
    RelayHub::Limits limits;
    // Times the rate limits; null: the system clock. Not owned; must outlive the server.
    const Clock* clock = nullptr;
  };

  // `tls` is the coordinator's identity: the relay serves its server certificate chain. `is_member`
  // decides whether an authenticated key may use the relay and in which mesh (the coordinator's
  // membership check). The private key is copied; its public key goes into the network map.
  RelayServer(const SecretKey& private_key, const TlsIdentity& tls, MembershipCheck is_member,
              Options options);
  RelayServer(const SecretKey& private_key, const TlsIdentity& tls, MembershipCheck is_member);
  // Closes every connection and joins the I/O thread.
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Binds `port` (0: the kernel picks one; see port()) and starts serving. Fails with
  // kFailedPrecondition naming `--relay-port` when the port is in use, kInvalidArgument for a bad
  // port or address or a TLS identity that does not load, kFailedPrecondition when called twice.
  [[nodiscard]] absl::Status Listen(int port);

  // Constructs a server and calls Listen(port).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RelayServer>> Start(
      int port, const SecretKey& private_key, const TlsIdentity& tls, MembershipCheck is_member,
      Options options);
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RelayServer>> Start(
      int port, const SecretKey& private_key, const TlsIdentity& tls, MembershipCheck is_member);

  // Closes the relay session of `key`, which is no longer a member. Thread-safe; returns at once
  // (the I/O thread does it).
  void Revoke(const PublicKey& key);
  // `key` may have moved to another mesh: its session is scoped to the mesh the membership check
  // names now (closed when it names none). Thread-safe; returns at once (the I/O thread does it).
  void Rescope(const PublicKey& key);

  // The bound port after a successful Listen, else 0.
  uint16_t port() const;
  const PublicKey& public_key() const;
  const RelayCounters& counters() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnelmesh
