// The agent's WebSocket relay transport: one connection to the coordinator's relay
// (operator/relay), over which the agent sends WireGuard and discovery messages addressed by the
// destination's public key and receives those addressed to it (lib/wire/relay_frame.h). Messages
// are already encrypted end to end; the relay never sees plaintext.
//
// The connection is WebSocket over TLS (wss://). The relay must present a certificate chain that
// the coordinator's CA (the one the agent pinned for gRPC; not the system's store) issued for
// kCoordinatorServerName, whatever address the URL dials; then it must send a Challenge carrying
// the public key the network map gives for it. The client proves ownership of our key (Hello) and
// waits for Ready. After that it keeps the connection up by itself: when it drops, it reconnects
// with jittered exponential backoff starting near 100 ms, and logs an outage's first failure (in
// words: connection refused, timed out, ...), then summaries at growing spacing (at most one
// about every 30 s; lib/base/retry_log.h), then the reconnection. A relay that fails either check
// (an impostor, or a stale network map) is logged as a warning on every attempt and retried with a
// slower backoff (about 1 s doubling to 30 s), never given up on. Send() never blocks: while
// disconnected, or when too many messages are in flight, it drops and counts.
//
// cpprestsdk (websocket_callback_client) lives only in relay_client.cc, and every exception it
// throws is caught there.
//
// Thread-safety: Send(), connected() and counters() may be called from any thread. Connect() and
// the destructor from the owner's thread. The receive callback runs on a cpprestsdk thread, one
// message at a time, and must not block; the payload span is valid only during the call.
// The destructor may wait a few seconds for a connection attempt in progress to give up.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"

namespace tunnelmesh {

struct RelayClientCounters {
  std::atomic<uint64_t> connect_attempts{0};
  std::atomic<uint64_t> sessions{0};              // times the relay said Ready
  std::atomic<uint64_t> refused{0};               // Error frames refusing us (not member, proof)
  std::atomic<uint64_t> server_key_mismatch{0};   // a Challenge carrying another key
  std::atomic<uint64_t> certificate_refused{0};   // a TLS chain the pinned CA did not issue
  std::atomic<uint64_t> frames_sent{0};           // Send frames the socket accepted
  std::atomic<uint64_t> bytes_sent{0};            // their payload bytes
  std::atomic<uint64_t> frames_received{0};       // Deliver frames passed to the callback
  std::atomic<uint64_t> bytes_received{0};        // their payload bytes
  std::atomic<uint64_t> dropped_disconnected{0};  // Send() while not connected
  std::atomic<uint64_t> dropped_queue_full{0};    // Send() with max_in_flight already queued
  std::atomic<uint64_t> dropped_invalid{0};       // Send() with an empty or too long payload
  std::atomic<uint64_t> send_failures{0};         // queued, then failed in the WebSocket library
  std::atomic<uint64_t> malformed{0};             // frames from the relay that do not parse
};

class RelayClient {
 public:
  using ReceiveCallback =
      std::function<void(const PublicKey& source, absl::Span<const uint8_t> payload)>;

  struct Options {
    // The first reconnect delay (jittered); it doubles per failure up to max_backoff, which is
    // small so that agents are back within about a second of a relay's return (a refused
    // connection costs the relay next to nothing).
    std::chrono::milliseconds initial_backoff{100};
    std::chrono::milliseconds max_backoff{800};
    // The backoff after a relay that is not the one we expect (wrong certificate or key): long
    // enough not to hammer an impostor or a misconfigured relay, short enough to find the real
    // one again within half a minute of its return.
    std::chrono::milliseconds untrusted_initial_backoff{1000};
    std::chrono::milliseconds untrusted_max_backoff{30000};
    // One attempt: TCP connect, WebSocket upgrade, Challenge, Hello, Ready.
    std::chrono::milliseconds connect_timeout{10000};
    // Messages handed to the socket and not yet written, before Send() drops.
    size_t max_in_flight = 512;
    // Seed of the backoff jitter; 0 takes one from the OS.
    uint64_t jitter_seed = 0;
    // The only CA the relay's certificate chain may lead to (PEM, one or more certificates): the
    // coordinator's, as pinned. Required.
    std::string trusted_ca_pem;
    // The name the relay's certificate must carry (checked instead of the host in the URL).
    std::string server_name = kCoordinatorServerName;
  };

  RelayClient();
  explicit RelayClient(Options options);
  // Stops reconnecting and closes the connection.
  ~RelayClient();
  RelayClient(const RelayClient&) = delete;
  RelayClient& operator=(const RelayClient&) = delete;

  // Sets where Deliver frames go. Call before Connect(); later calls are ignored.
  void SetReceiveCallback(ReceiveCallback callback);

  // Connects to `url` (wss://host:port/relay) as `public_key` and waits for the first attempt to
  // finish. Returns OK once the relay has registered us; kInvalidArgument for a bad URL (ws://
  // included: the relay speaks TLS only), a missing or unreadable CA, or a key pair that does not
  // match; kFailedPrecondition when called twice, or when the relay's certificate does not lead to
  // the trusted CA or its Challenge carries a key other than `server_key` (an impostor, a stale
  // network map or a wrong URL: it keeps trying at the untrusted backoff); kPermissionDenied when
  // the relay refuses our key (not a member yet; it keeps trying at the slowest backoff);
  // kUnavailable when the relay cannot be reached (it keeps trying). Blocks for at most about
  // Options::connect_timeout.
  [[nodiscard]] absl::Status Connect(std::string_view url, const SecretKey& private_key,
                                     const PublicKey& public_key, const PublicKey& server_key);

  // Queues `payload` (1..65535 bytes) for `destination`. Returns false, and counts why, when it is
  // dropped instead. Never blocks.
  bool Send(const PublicKey& destination, absl::Span<const uint8_t> payload);

  // True while the member leaves the mesh (false again if the leave failed): the relay's refusal
  // that follows a leave (not_member) is expected, so losing the connection is logged at debug
  // level only. Any thread.
  void SetLeaving(bool leaving);

  // True between the relay's Ready and the loss of that connection.
  bool connected() const;
  const RelayClientCounters& counters() const;

 private:
  struct Core;
  std::shared_ptr<Core> core_;
  std::thread worker_;
};

// Sizes cpprestsdk's process-wide thread pool (40 threads unless set first). Call once from main
// before anything uses cpprestsdk. Returns false, leaving the pool as it is, when it already
// exists.
bool InitCpprestThreadPool(size_t threads);

}  // namespace tunnelmesh
