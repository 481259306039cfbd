// mac1, mac2 and cookie replies (whitepaper section 5.4.4 and 5.4.7): the DoS defence of WireGuard.
// Every handshake message carries mac1 (proves the sender knows our public key). Under load, a
// responder answers a handshake lacking a valid mac2 with a cookie reply instead of doing
// Diffie-Hellman; the initiator then includes mac2 = MAC(cookie, message) in its next attempt.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "lib/base/clock.h"
#include "lib/noise/constants.h"
#include "lib/noise/handshake.h"
#include "lib/wire/wireguard.h"

namespace tunnelmesh::noise {

// Responder side, one per device: validates macs of incoming handshake messages and makes cookie
// replies. The secret behind cookies rotates every two minutes. Thread-safe.
class CookieChecker {
 public:
  enum class MacState { kInvalidMac1, kValidMac1, kValidMac1AndCookie };

  explicit CookieChecker(const StaticIdentity& local);

  // `message` is a whole handshake message; `source` identifies the sender's address and port
  // (any stable byte encoding of them).
  MacState Check(absl::Span<const uint8_t> message, absl::Span<const uint8_t> source, MonoTime now);

  // A cookie reply for `message` (whose sender index and mac1 it echoes) from `source`.
  void MakeReply(absl::Span<const uint8_t> message, uint32_t sender_index,
                 absl::Span<const uint8_t> source, MonoTime now, wire::CookieReply* out);

 private:
  void CookieFor(absl::Span<const uint8_t> source, MonoTime now, uint8_t out[16])
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  uint8_t mac1_key_[32];
  uint8_t cookie_key_[32];
  absl::Mutex mu_;
  uint8_t secret_[32] ABSL_GUARDED_BY(mu_) = {};
  MonoTime secret_birth_ ABSL_GUARDED_BY(mu_);
  bool secret_valid_ ABSL_GUARDED_BY(mu_) = false;
};

// Initiator side, one per peer: stamps outgoing handshake messages with mac1 (and mac2 while a
// fresh cookie is held) and consumes cookie replies. Thread-compatible: the peer's lock guards it.
class CookieJar {
 public:
  // Fills the last 32 bytes of `message` (an initiation or response being sent to `peer`).
  void AddMacs(absl::Span<uint8_t> message, const PeerStatics& peer, MonoTime now);

  // Accepts a cookie reply answering the last message we stamped. Returns false when it does not
  // decrypt (forged, stale or not for us).
  bool Consume(const wire::CookieReply& reply, const PeerStatics& peer, MonoTime now);

  bool has_fresh_cookie(MonoTime now) const {
    return cookie_valid_ && now - cookie_birth_ < kCookieValidity;
  }

 private:
  uint8_t last_mac1_[16] = {};
  bool last_mac1_valid_ = false;
  uint8_t cookie_[16] = {};
  MonoTime cookie_birth_;
  bool cookie_valid_ = false;
};

}  // namespace tunnelmesh::noise
