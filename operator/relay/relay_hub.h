// The relay's protocol core, without I/O: authenticates connections (Challenge, Hello, membership
// check, which also names the member's mesh), keeps the table from public key to connection (the
// newest authenticated connection for a key wins) and turns Send frames into Deliver frames for
// the destination's connection. A Send is delivered only within the sender's mesh, only when its
// payload is a WireGuard or discovery message, and only while the sender stays within its rate
// (a token bucket on frames and one on bytes per session). Bad input is a counted drop, never an
// error. The transport (RelayServer, on Boost.Beast) feeds it frames and connection events and
// implements RelayConnection; unit tests drive it with fakes and a fake clock.
//
// Thread-safety: RelayHub is not thread-safe; the relay's I/O thread makes every call. counters()
// may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/wire/relay_frame.h"

namespace tunnelmesh {

// Why the relay dropped something or refused someone. Monotonic except `sessions`.
struct RelayCounters {
  std::atomic<uint64_t> connections{0};          // WebSocket connections opened
  std::atomic<uint64_t> bad_upgrades{0};         // TCP connections that never became WebSockets
  std::atomic<uint64_t> auth_failures{0};        // connections refused: bad proof, not a member,
                                                 // timeout, anything but a valid Hello first
  std::atomic<uint64_t> frames_relayed{0};       // Deliver frames queued to a destination
  std::atomic<uint64_t> bytes_relayed{0};        // their payload bytes
  std::atomic<uint64_t> unknown_destination{0};  // Send to a key with no connection here
  std::atomic<uint64_t> malformed{0};            // frames that do not parse or are not allowed
  std::atomic<uint64_t> oversized{0};            // messages longer than the largest frame
  std::atomic<uint64_t> queue_overflow{0};       // Deliver frames dropped: destination queue full
  std::atomic<uint64_t> budget_overflow{0};      // Deliver frames dropped: the relay-wide budget
                                                 // of queued bytes is spent
  std::atomic<uint64_t> cross_mesh{0};           // Send to a key of another mesh (dropped)
  std::atomic<uint64_t> bad_payload{0};          // Send whose payload is neither WireGuard nor
                                                 // discovery (dropped)
  std::atomic<uint64_t> rate_limited{0};         // Send over the session's frame or byte rate
  // TCP connections closed right after accept because a cap was reached.
  std::atomic<uint64_t> refused_total_cap{0};    // all connections (max_connections)
  std::atomic<uint64_t> refused_source_cap{0};   // from one source IP (max_connections_per_source)
  std::atomic<uint64_t> refused_pending_cap{0};  // not yet authenticated (max_pending_connections)
  std::atomic<uint64_t> plaintext_refused{0};    // plain HTTP (ws://, an old agent) instead of TLS
  std::atomic<uint64_t> tls_failures{0};         // TLS handshakes that failed
  std::atomic<uint64_t> rescoped{0};  // sessions moved to their member's new mesh (Rescope)
  std::atomic<int64_t> sessions{0};   // authenticated connections now
};

// Why the transport closed a TCP connection at once (RelayHub::ConnectionRefused).
enum class ConnectionCap { kTotal, kPerSource, kPending };

// What became of a frame handed to RelayConnection::Send.
enum class SendResult {
  kQueued,
  kQueueFull,   // the connection's own queue is at its bound
  kOverBudget,  // the relay-wide budget of queued bytes is spent
};

// Per-session rate limits on Send frames: token buckets that refill at the rate and hold up to
// `burst` worth of it. The defaults sit well above what one member's relayed TCP stream reaches
// on the relay benchmark (about 0.4 Gbit/s, 33,000 frames/s; docs/benchmarks.md), so they bind
// only a member that floods the relay at the others' expense.
struct RelayLimits {
  double frames_per_second = 50000;
  double bytes_per_second = 64.0 * 1024 * 1024;  // 64 MiB/s, about 537 Mbit/s
  Duration burst = std::chrono::seconds(1);
};

// One client connection as the hub sees it; implemented by the transport. Neither function may
// call back into the hub before returning.
class RelayConnection {
 public:
  virtual ~RelayConnection() = default;
  // Queues one binary message. A `droppable` (Deliver) frame is refused when the connection's
  // outbound queue or the relay's byte budget is full, and the call says which; control frames
  // are always queued (kQueued).
  virtual SendResult Send(std::vector<uint8_t> frame, bool droppable) = 0;
  // Sends what is queued, then closes. The transport reports Closed() when the connection is gone.
  virtual void Close() = 0;
  // The connection passed authentication (the Ready frame is queued): it no longer counts against
  // the transport's cap on pending connections.
  virtual void Authenticated() {}
};

class RelayHub {
 public:
  // Called on the relay thread for every Hello whose proof holds; must be fast and must not block.
  // Returns the mesh `key` is a member of, or nullopt when it is none's. The session is scoped to
  // that mesh: it reaches, and is reached by, members of the same mesh only.
  using MembershipCheck = std::function<std::optional<std::string>(const PublicKey&)>;
  // Fills the Challenge's nonce and random bytes; libsodium's randombytes by default.
  using RandomSource = std::function<void(uint8_t* out, size_t size)>;

  using Limits = RelayLimits;

  // `clock` (not owned; the system clock when null) times the rate limits and must outlive the
  // hub.
  RelayHub(const SecretKey& server_private_key, MembershipCheck is_member,
           RandomSource random = nullptr, Limits limits = Limits(), const Clock* clock = nullptr);
  RelayHub(const RelayHub&) = delete;
  RelayHub& operator=(const RelayHub&) = delete;

  // A new WebSocket connection: sends it a Challenge. `connection` stays valid until Closed().
  void Opened(RelayConnection* connection);
  // One complete binary message from `connection`.
  void Received(RelayConnection* connection, std::vector<uint8_t> frame);
  // A message the transport dropped without passing it on: longer than the largest frame.
  void ReceivedOversized(RelayConnection* connection);
  // A text (not binary) message.
  void ReceivedText(RelayConnection* connection);
  // The authentication deadline of `connection` passed; refuses it unless it is authenticated.
  void AuthDeadline(RelayConnection* connection);
  // The connection is gone; the hub forgets it and never touches it again.
  void Closed(RelayConnection* connection);
  // A TCP connection failed its HTTP/WebSocket upgrade (counted only).
  void BadUpgrade();
  // The transport closed a TCP connection at once because `cap` was reached (counted only).
  void ConnectionRefused(ConnectionCap cap);
  // A connection spoke plain HTTP instead of TLS; the transport told it so and closed it.
  void PlaintextRefused();
  // A TLS handshake failed (counted only).
  void TlsFailed();
  // `key` is no longer a member (it left or was evicted): its connection, if any, is told so and
  // closed, and frames to it are unknown destinations from now on.
  void Revoke(const PublicKey& key);
  // `key` may have moved to another mesh (the coordinator says so when a member's mesh changes):
  // its session asks the membership check again and is scoped to the mesh it names from now on,
  // so that it neither reaches nor is reached by its old mesh (counted in `rescoped`); when the
  // check names none, this is Revoke.
  void Rescope(const PublicKey& key);

  const PublicKey& public_key() const { return public_key_; }
  const RelayCounters& counters() const { return counters_; }

 private:
  // A token bucket: `tokens` of at most `capacity`, refilled at `rate` per second since `last`.
  struct Bucket {
    double tokens = 0;
    MonoTime last;
  };

  struct ConnectionState {
    wire::relay::Challenge challenge;
    PublicKey key;
    std::string mesh;  // set at authentication
    bool authenticated = false;
    bool closing = false;
    Bucket frames;
    Bucket bytes;
  };

  void HandleHello(RelayConnection* connection, ConnectionState& state,
                   const std::vector<uint8_t>& frame);
  void HandleSend(ConnectionState& state, std::vector<uint8_t> frame);
  // Takes `cost` tokens from `bucket` (refilled up to now) when it holds them.
  static bool Take(Bucket& bucket, double rate, double capacity, double cost, MonoTime now);
  // Counts an authentication failure, sends Error{code} and closes.
  void Refuse(RelayConnection* connection, ConnectionState& state, wire::relay::ErrorCode code,
              std::string_view text);
  void CloseWithError(RelayConnection* connection, ConnectionState& state,
                      wire::relay::ErrorCode code, std::string_view text);

  SecretKey private_key_;
  PublicKey public_key_;
  MembershipCheck is_member_;
  RandomSource random_;
  const Limits limits_;
  const double frame_capacity_;
  const double byte_capacity_;
  SystemClock system_clock_;
  const Clock* clock_;
  absl::flat_hash_map<RelayConnection*, ConnectionState> connections_;
  absl::flat_hash_map<PublicKey, RelayConnection*> routes_;
  RelayCounters counters_;
};

}  // namespace tunnelmesh
