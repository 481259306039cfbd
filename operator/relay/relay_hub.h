// The relay's protocol core, without I/O: authenticates connections (Challenge, Hello, membership
// check), keeps the table from public key to connection (the newest authenticated connection for a
// key wins) and turns Send frames into Deliver frames for the destination's connection. Bad input
// is a counted drop, never an error. The transport (RelayServer, on Boost.Beast) feeds it frames
// and connection events and implements RelayConnection; unit tests drive it with fakes.
//
// Thread-safety: RelayHub is not thread-safe; the relay's I/O thread makes every call. counters()
// may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
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
  std::atomic<int64_t> sessions{0};              // authenticated connections now
};

// One client connection as the hub sees it; implemented by the transport. Neither function may
// call back into the hub before returning.
class RelayConnection {
 public:
  virtual ~RelayConnection() = default;
  // Queues one binary message. A `droppable` (Deliver) frame is refused when the connection's
  // outbound queue is full, and the call returns false; control frames are always queued.
  virtual bool Send(std::vector<uint8_t> frame, bool droppable) = 0;
  // Sends what is queued, then closes. The transport reports Closed() when the connection is gone.
  virtual void Close() = 0;
};

class RelayHub {
 public:
  // Called on the relay thread for every Hello whose proof holds; must be fast and must not block.
  using MembershipCheck = std::function<bool(const PublicKey&)>;
  // Fills the Challenge's nonce and random bytes; libsodium's randombytes by default.
  using RandomSource = std::function<void(uint8_t* out, size_t size)>;

  RelayHub(const SecretKey& server_private_key, MembershipCheck is_member,
           RandomSource random = nullptr);
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
  // `key` is no longer a member (it left or was evicted): its connection, if any, is told so and
  // closed, and frames to it are unknown destinations from now on.
  void Revoke(const PublicKey& key);

  const PublicKey& public_key() const { return public_key_; }
  const RelayCounters& counters() const { return counters_; }

 private:
  struct ConnectionState {
    wire::relay::Challenge challenge;
    PublicKey key;
    bool authenticated = false;
    bool closing = false;
  };

  void HandleHello(RelayConnection* connection, ConnectionState& state,
                   const std::vector<uint8_t>& frame);
  void HandleSend(const ConnectionState& state, std::vector<uint8_t> frame);
  // Counts an authentication failure, sends Error{code} and closes.
  void Refuse(RelayConnection* connection, ConnectionState& state, wire::relay::ErrorCode code,
              std::string_view text);
  void CloseWithError(RelayConnection* connection, ConnectionState& state,
                      wire::relay::ErrorCode code, std::string_view text);

  SecretKey private_key_;
  PublicKey public_key_;
  MembershipCheck is_member_;
  RandomSource random_;
  absl::flat_hash_map<RelayConnection*, ConnectionState> connections_;
  absl::flat_hash_map<PublicKey, RelayConnection*> routes_;
  RelayCounters counters_;
};

}  // namespace tunnelmesh
