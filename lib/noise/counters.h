// Named counters for every reason a datagram or packet is dropped, and for handshake outcomes.
// Lock-free; read by `tunnelmesh-agent status` and asserted on by tests.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace tunnelmesh::noise {

enum class Drop : uint8_t {
  kMalformed,          // Not a WireGuard message of a valid type and size.
  kMac1Invalid,        // Handshake message whose mac1 is not for our key.
  kHandshakeInvalid,   // Handshake that does not authenticate, or for a state we are not in.
  kUnknownPeer,        // Initiation from a static key that is not a configured peer.
  kHandshakeReplayed,  // Initiation whose TAI64N timestamp is not newer than the last accepted.
  kHandshakeFlood,     // Initiations from one peer faster than 50 per second.
  kCookieSent,         // Handshake answered with a cookie reply because we are under load.
  kCookieInvalid,      // Cookie reply that does not decrypt.
  kUnknownReceiver,    // Receiver index that names no live session.
  kKeypairExpired,     // Transport data for a keypair past REJECT_AFTER_TIME or its message limit.
  kDecryptFailed,      // Transport data whose authentication tag fails.
  kReplayed,           // Transport data with a counter already seen or outside the window.
  kInnerMalformed,     // Decrypted payload that is not an IPv4 or IPv6 packet.
  kSourceNotAllowed,   // Decrypted packet whose source address is not in the peer's AllowedIPs.
  kNoRoute,            // Outbound packet to an address no peer's AllowedIPs cover.
  kNoEndpoint,         // Outbound data for a peer whose endpoint is not known yet.
  kStagedOverflow,     // Outbound packet dropped because too many wait for a handshake.
  kHandshakeTimeout,   // Staged packets dropped after REKEY_ATTEMPT_TIME without a handshake.
  kSendFailed,         // The UDP socket refused a datagram.
  kTunWriteFailed,     // The TUN device refused a packet.
  kPacketTooBig,       // Outbound packet larger than the interface MTU.
  kCount,
};

inline const char* DropName(Drop d) {
  static constexpr const char* kNames[] = {
      "malformed",        "mac1_invalid",      "handshake_invalid", "unknown_peer",
      "handshake_replayed", "handshake_flood", "cookie_sent",       "cookie_invalid",
      "unknown_receiver", "keypair_expired",   "decrypt_failed",    "replayed",
      "inner_malformed",  "source_not_allowed", "no_route",         "no_endpoint",
      "staged_overflow",  "handshake_timeout", "send_failed",       "tun_write_failed", "packet_too_big",
  };
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Drop::kCount));
  return kNames[static_cast<size_t>(d)];
}

class DropCounters {
 public:
  void Add(Drop d, uint64_t n = 1) {
    counts_[static_cast<size_t>(d)].fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t Get(Drop d) const { return counts_[static_cast<size_t>(d)].load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Drop::kCount)> counts_{};
};

}  // namespace tunnelmesh::noise
