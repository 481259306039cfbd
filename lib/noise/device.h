// The sans-IO WireGuard engine: one local identity, its peers, their handshakes, sessions and
// timers (whitepaper section 6). Callers feed it datagrams, packets and the time; it says what to
// send where and hands back decrypted packets. It never touches a socket or a clock, so the same
// code runs in unit tests with a fake clock and in the agent's data plane.
//
// Threads: every public method is thread-safe. The agent calls Receive from its UDP thread,
// SealInPlace from its TUN thread, Tick from its UDP thread every 100 ms, and the peer-management
// methods from its control thread. Lock order: Device::peers_mu_, then Peer::mu_, then
// IndexTable::mu_ (a leaf).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "lib/net/transport_endpoint.h"
#include "lib/noise/constants.h"
#include "lib/noise/cookie.h"
#include "lib/noise/counters.h"
#include "lib/noise/handshake.h"
#include "lib/noise/keypair.h"

namespace tunnelmesh::noise {

class Peer;

// Sends `bytes` to `to` (a UDP address or the relay). Called synchronously from inside Device
// methods, on the caller's thread.
using Emit = absl::FunctionRef<void(const TransportEndpoint& to, absl::Span<const uint8_t> bytes)>;

// Maps our 32-bit session indices to the peer (and keypair) they belong to. Thread-safe leaf lock.
class IndexTable {
 public:
  struct Entry {
    Peer* peer = nullptr;
    std::shared_ptr<Keypair> keypair;  // Null for an index of a handshake in progress.
  };
  // Reserves a fresh random index for `peer`.
  uint32_t Allocate(Peer* peer);
  void SetKeypair(uint32_t index, std::shared_ptr<Keypair> keypair);
  void Remove(uint32_t index);
  std::optional<Entry> Lookup(uint32_t index) const;
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint32_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// Per-peer traffic statistics, readable without locks.
struct PeerStats {
  std::atomic<uint64_t> rx_bytes{0}, tx_bytes{0}, rx_packets{0}, tx_packets{0};
  std::atomic<uint64_t> handshakes_completed{0}, handshakes_initiated{0};
  // Responses to our initiations that did not authenticate (the peer's key or the preshared key
  // differs from ours), and initiations given up after REKEY_ATTEMPT_TIME without an answer.
  std::atomic<uint64_t> handshake_responses_rejected{0}, handshake_timeouts{0};
  std::atomic<int64_t> last_handshake_unix_nanos{0};
};

struct PeerConfig {
  PublicKey public_key;
  SecretKey preshared_key;  // Zero for none.
  std::optional<TransportEndpoint> endpoint;
  std::chrono::seconds persistent_keepalive{0};  // Zero for off.
  // Follow the latest authenticated source address (WireGuard's roaming). Off when something else
  // (the agent's path selection) decides where the peer is reached.
  bool roaming = true;
  // During a preshared-key rollover: a second key also accepted in responses (PresharedKeys).
  std::optional<SecretKey> secondary_preshared_key = std::nullopt;
};

// One remote peer's protocol state. Created and owned by Device.
class Peer {
 public:
  Peer(const StaticIdentity& local, PeerConfig config, uint32_t id, IndexTable* indices);
  ~Peer();

  uint32_t id() const { return id_; }
  const PublicKey& public_key() const { return statics_.public_key; }
  const PeerStats& stats() const { return stats_; }
  // Where the peer is reached now: a UDP address or the relay.
  std::optional<TransportEndpoint> endpoint() const;
  void set_endpoint(const TransportEndpoint& endpoint);
  std::chrono::seconds persistent_keepalive() const { return persistent_keepalive_; }

 private:
  friend class Device;

  struct Staged {
    std::vector<uint8_t> bytes;
  };

  // Replaces the keypair slots after a handshake (whitepaper 5.4.6 / Linux add_new_keypair).
  void InstallKeypair(std::shared_ptr<Keypair> keypair) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A receive on `next_` confirms it: it becomes current. Returns true when that happened.
  bool ConfirmKeypair(const Keypair* keypair) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropKeypair(std::shared_ptr<Keypair>& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearHandshake() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ZeroAllKeys() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The keypair to send with now, or null.
  std::shared_ptr<Keypair> SendKeypair(MonoTime now) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const uint32_t id_;
  IndexTable* const indices_;
  const PeerStatics statics_;
  // Replaced by Device::SetPresharedKeys; read by every handshake step.
  PresharedKeys preshared_keys_ ABSL_GUARDED_BY(mu_);
  const std::chrono::seconds persistent_keepalive_;
  const bool roaming_;
  PeerStats stats_;

  mutable absl::Mutex mu_;
  std::optional<TransportEndpoint> endpoint_ ABSL_GUARDED_BY(mu_);
  CookieJar cookies_ ABSL_GUARDED_BY(mu_);
  // Initiator handshake in progress.
  bool initiation_pending_ ABSL_GUARDED_BY(mu_) = false;
  InitiatorState initiator_ ABSL_GUARDED_BY(mu_);
  MonoTime last_initiation_sent_ ABSL_GUARDED_BY(mu_);
  MonoTime first_initiation_attempt_ ABSL_GUARDED_BY(mu_);
  Duration retransmit_after_ ABSL_GUARDED_BY(mu_){0};
  bool handshake_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool initiated_ever_ ABSL_GUARDED_BY(mu_) = false;
  // Responder replay and flood protection.
  Tai64n latest_timestamp_ ABSL_GUARDED_BY(mu_){};
  MonoTime last_initiation_consumed_ ABSL_GUARDED_BY(mu_);
  bool consumed_ever_ ABSL_GUARDED_BY(mu_) = false;
  // Sessions.
  std::shared_ptr<Keypair> current_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Keypair> previous_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Keypair> next_ ABSL_GUARDED_BY(mu_);
  bool rekey_on_receive_done_ ABSL_GUARDED_BY(mu_) = false;
  // Timers (whitepaper 6.5); a deadline of nullopt is an unarmed timer.
  std::optional<MonoTime> keepalive_deadline_ ABSL_GUARDED_BY(mu_);
  std::optional<MonoTime> new_handshake_deadline_ ABSL_GUARDED_BY(mu_);
  std::optional<MonoTime> zero_keys_deadline_ ABSL_GUARDED_BY(mu_);
  // Last authenticated packet sent or received, for the persistent keepalive.
  MonoTime last_sent_or_received_ ABSL_GUARDED_BY(mu_);
  bool traversed_ever_ ABSL_GUARDED_BY(mu_) = false;
  // Packets waiting for a session, oldest first.
  std::deque<Staged> staged_ ABSL_GUARDED_BY(mu_);
};

class Device {
 public:
  static constexpr size_t kMaxStaged = 128;
  // Space SealInPlace needs after the packet for the tag and padding.
  static constexpr size_t kSealTailroom = 16 + 16;

  // `mtu` bounds padding of transport payloads. `handshakes_per_second_under_load` is the rate of
  // incoming handshake messages above which the device demands cookies (mac2).
  Device(const SecretKey& private_key, size_t mtu,
         uint32_t handshakes_per_second_under_load = 1000);
  ~Device();

  const StaticIdentity& identity() const { return identity_; }
  DropCounters& drops() { return drops_; }
  const DropCounters& drops() const { return drops_; }
  const OutcomeCounters& outcomes() const { return outcomes_; }

  // Adds a peer; fails when the key is ours or already present.
  absl::StatusOr<Peer*> AddPeer(PeerConfig config);
  // Replaces a peer's preshared keys (a rollover, see PresharedKeys). Established sessions keep
  // their keys; the next handshake uses the new ones. False when there is no such peer.
  bool SetPresharedKeys(const PublicKey& key, PresharedKeys keys);
  Peer* FindPeer(const PublicKey& key) const;
  // Removes a peer: its sessions end at once; the object stays valid for kRetireAfter so that data
  // threads still holding it from an older route snapshot finish safely, then Tick frees it.
  void RemovePeer(const PublicKey& key, MonoTime now);
  static constexpr std::chrono::seconds kRetireAfter{10};
  void ForEachPeer(absl::FunctionRef<void(Peer&)> fn) const;

  struct Received {
    enum class Kind { kNothing, kPacket };
    Kind kind = Kind::kNothing;
    Peer* peer = nullptr;
    // The decrypted packet starts at datagram + wire::kTransportHeaderSize and has this length
    // (padding removed using the IP header's length).
    size_t packet_length = 0;
  };

  // Processes one datagram from `from`, decrypting transport data in place. Handshake replies, and
  // packets released by a completed handshake, go out through `emit`. Every drop is counted.
  Received Receive(absl::Span<uint8_t> datagram, const TransportEndpoint& from, MonoTime now,
                   absl::Time wall_now, Emit emit);

  enum class SealResult { kSealed, kStaged, kDropped };
  // Encrypts the packet at buffer[16, 16 + packet_length) for `peer` into a transport message at
  // buffer[0, *message_length). `buffer` needs kSealTailroom bytes after the packet. Without a
  // session the packet is staged and a handshake is started through `emit`.
  SealResult SealInPlace(Peer* peer, uint8_t* buffer, size_t packet_length, MonoTime now,
                         absl::Time wall_now, Emit emit, size_t* message_length,
                         TransportEndpoint* destination);

  // Runs every peer's timers: retransmits, keepalives, rekeys, key erasure.
  void Tick(MonoTime now, absl::Time wall_now, Emit emit);

  // Starts a handshake with `peer` now unless one was sent within REKEY_TIMEOUT.
  void Initiate(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit);

  size_t live_indices() const { return indices_.size(); }

  // For tests only (the agent's TUNNELMESH_TEST_REKEY_AFTER_SECONDS): renew sessions after
  // `after` instead of REKEY_AFTER_TIME (120 s), so that end-to-end tests see many handshakes.
  // Call before the device is used: the value is read without synchronization.
  void set_rekey_after_time_for_testing(Duration after) { rekey_after_time_ = after; }

 private:
  void HandleInitiation(absl::Span<uint8_t> datagram, const TransportEndpoint& from, MonoTime now,
                        Emit emit);
  void HandleResponse(absl::Span<uint8_t> datagram, const TransportEndpoint& from, MonoTime now,
                      absl::Time wall_now, Emit emit);
  void HandleCookieReply(absl::Span<uint8_t> datagram, MonoTime now);
  Received HandleData(absl::Span<uint8_t> datagram, const TransportEndpoint& from, MonoTime now,
                      absl::Time wall_now, Emit emit);
  // mac1 / load / mac2 gate shared by initiations and responses. Returns false when the message
  // must not be processed further (dropped or answered with a cookie).
  bool PassesMacs(absl::Span<uint8_t> datagram, uint32_t sender_index,
                  const TransportEndpoint& from, MonoTime now, Emit emit);
  bool UnderLoad(MonoTime now);
  void SendInitiationLocked(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu_);
  // Pads the packet at buffer + 16, writes the transport header and seals in place; returns the
  // message length.
  size_t SealTransport(const Keypair& keypair, uint64_t counter, uint8_t* buffer,
                       size_t packet_length) const;
  // Seals and sends `packet` (or a keepalive when empty) on the current session.
  bool SendOnSessionLocked(Peer* peer, const std::shared_ptr<Keypair>& keypair,
                           absl::Span<const uint8_t> packet, MonoTime now, Emit emit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu_);
  // After a session became usable: sends staged packets, or a keepalive when `keepalive_if_empty`.
  void FlushStagedLocked(Peer* peer, MonoTime now, bool keepalive_if_empty, Emit emit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu_);
  void OnAuthenticatedSend(Peer* peer, MonoTime now, bool is_data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu_);
  void TickPeerLocked(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu_);

  const StaticIdentity identity_;
  const size_t mtu_;
  const uint32_t load_threshold_;
  Duration rekey_after_time_ = kRekeyAfterTime;
  CookieChecker cookie_checker_;
  IndexTable indices_;
  DropCounters drops_;
  OutcomeCounters outcomes_;

  mutable absl::Mutex peers_mu_;
  std::vector<std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(peers_mu_);
  std::vector<std::pair<MonoTime, std::unique_ptr<Peer>>> retired_ ABSL_GUARDED_BY(peers_mu_);
  absl::flat_hash_map<PublicKey, Peer*> by_key_ ABSL_GUARDED_BY(peers_mu_);
  uint32_t next_peer_id_ ABSL_GUARDED_BY(peers_mu_) = 1;

  absl::Mutex load_mu_;
  MonoTime load_window_start_ ABSL_GUARDED_BY(load_mu_);
  uint32_t load_window_count_ ABSL_GUARDED_BY(load_mu_) = 0;
  bool under_load_ ABSL_GUARDED_BY(load_mu_) = false;
};

}  // namespace tunnelmesh::noise
