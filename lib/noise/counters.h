// Named counters of the WireGuard protocol core: every reason it drops a datagram or packet, and
// the handshake outcomes that are not drops (a cookie reply sent under load). Lock-free; read by
// `tunnelmesh-agent status` and asserted on by tests. The data plane's own reasons (no route, TUN
// write failed, send failed, ...) are counted by the data plane (node-agent/dataplane/counters.h).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tunnelmesh::noise {

enum class Drop : uint8_t {
  kMalformed,          // Not a WireGuard message of a valid type and size.
  kMac1Invalid,        // Handshake message whose mac1 is not for our key.
  kHandshakeInvalid,   // Handshake that does not authenticate, or for a state we are not in.
  kUnknownPeer,        // Initiation from a static key that is not a configured peer.
  kHandshakeReplayed,  // Initiation whose TAI64N timestamp is not newer than the last accepted.
  kHandshakeFlood,     // Initiations from one peer faster than 50 per second.
  kCookieInvalid,      // Cookie reply that does not decrypt.
  kUnknownReceiver,    // Receiver index that names no live session.
  kKeypairExpired,     // Transport data for a keypair past REJECT_AFTER_TIME or its message limit.
  kDecryptFailed,      // Transport data whose authentication tag fails.
  kReplayed,           // Transport data with a counter already seen or outside the window.
  kInnerMalformed,     // Decrypted (or to be sealed) payload that is not an IPv4 or IPv6 packet.
  kSourceNotAllowed,   // Decrypted packet whose source address is not in the peer's AllowedIPs.
  kNoEndpoint,         // Outbound data for a peer whose endpoint is not known yet.
  kStagedOverflow,     // Outbound packet dropped because too many wait for a handshake.
  kHandshakeTimeout,   // Staged packets dropped after REKEY_ATTEMPT_TIME without a handshake.
  kCount,
};

// Outcomes worth counting that are not drops.
enum class Outcome : uint8_t {
  kCookieSent,  // Handshake answered with a cookie reply because we are under load (5.4.7).
  // Handshake response that authenticated only with the peer's second preshared key (a rollover
  // in progress: the responder uses the key we are moving to or away from).
  kSecondaryPresharedKey,
  kCount,
};

// The names `status --json` prints under "drops" (unchanged since before the split).
inline const char* DropName(Drop d) {
  static constexpr const char* kNames[] = {
      "malformed",          "mac1_invalid",    "handshake_invalid", "unknown_peer",
      "handshake_replayed", "handshake_flood", "cookie_invalid",    "unknown_receiver",
      "keypair_expired",    "decrypt_failed",  "replayed",          "inner_malformed",
      "source_not_allowed", "no_endpoint",     "staged_overflow",   "handshake_timeout",
  };
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Drop::kCount));
  return kNames[static_cast<size_t>(d)];
}

inline const char* OutcomeName(Outcome o) {
  static constexpr const char* kNames[] = {"cookie_sent", "psk_secondary_accepted"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Outcome::kCount));
  return kNames[static_cast<size_t>(o)];
}

// One relaxed atomic per value of the enum `E` (which ends in kCount).
template <typename E>
class EnumCounters {
 public:
  void Add(E e, uint64_t n = 1) {
    counts_[static_cast<size_t>(e)].fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t Get(E e) const {
    return counts_[static_cast<size_t>(e)].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(E::kCount)> counts_{};
};

using DropCounters = EnumCounters<Drop>;
using OutcomeCounters = EnumCounters<Outcome>;

}  // namespace tunnelmesh::noise
