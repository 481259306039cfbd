// The coordinator's WebSocket relay: agents that cannot reach each other directly send their
// (already end-to-end encrypted) WireGuard and discovery messages here, addressed by public key,
// and the relay forwards them (lib/wire/relay_frame.h has the protocol; RelayHub the rules).
// Plain ws:// on its own port (default 7701, `--relay-port`); path /relay.
//
// Each connection must answer the Challenge with a valid Hello within `auth_timeout` and pass the
// injected membership check. Every connection has a bounded outbound queue: when a destination
// reads too slowly its frames are dropped and counted, and no other client waits for it.
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
  };

  // `is_member` decides whether an authenticated key may use the relay (the coordinator's
  // membership check). The private key is copied; its public key goes into the network map.
  RelayServer(const SecretKey& private_key, MembershipCheck is_member, Options options);
  RelayServer(const SecretKey& private_key, MembershipCheck is_member);
  // Closes every connection and joins the I/O thread.
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Binds `port` (0: the kernel picks one; see port()) and starts serving. Fails with
  // kFailedPrecondition naming `--relay-port` when the port is in use, kInvalidArgument for a bad
  // port or address, kFailedPrecondition when called twice.
  [[nodiscard]] absl::Status Listen(int port);

  // Constructs a server and calls Listen(port).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RelayServer>> Start(
      int port, const SecretKey& private_key, MembershipCheck is_member, Options options);
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RelayServer>> Start(
      int port, const SecretKey& private_key, MembershipCheck is_member);

  // Closes the relay session of `key`, which is no longer a member. Thread-safe; returns at once
  // (the I/O thread does it).
  void Revoke(const PublicKey& key);

  // The bound port after a successful Listen, else 0.
  uint16_t port() const;
  const PublicKey& public_key() const;
  const RelayCounters& counters() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnelmesh
