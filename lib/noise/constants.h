// Protocol constants of WireGuard (whitepaper sections 5.4 and 6): construction and label strings
// and the timers every implementation agrees on.
#pragma once

#include <chrono>
#include <cstdint>

namespace tunnelmesh::noise {

inline constexpr char kConstruction[] = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
inline constexpr char kIdentifier[] = "WireGuard v1 zx2c4 Jason@zx2c4.com";
inline constexpr char kLabelMac1[] = "mac1----";
inline constexpr char kLabelCookie[] = "cookie--";

inline constexpr uint64_t kRekeyAfterMessages = uint64_t{1} << 60;
inline constexpr uint64_t kRejectAfterMessages = UINT64_MAX - (uint64_t{1} << 13);
inline constexpr std::chrono::seconds kRekeyAfterTime{120};
inline constexpr std::chrono::seconds kRejectAfterTime{180};
inline constexpr std::chrono::seconds kRekeyAttemptTime{90};
inline constexpr std::chrono::seconds kRekeyTimeout{5};
inline constexpr std::chrono::milliseconds kRekeyTimeoutJitterMax{334};
inline constexpr std::chrono::seconds kKeepaliveTimeout{10};
inline constexpr std::chrono::seconds kCookieRefreshTime{120};
// A received cookie is used for mac2 only while the responder's secret that made it can still be
// current, minus a margin for latency (Linux: COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY).
inline constexpr std::chrono::seconds kCookieValidity{120 - 5};
// At most this many initiations per second are consumed from one peer (flood protection).
inline constexpr std::chrono::milliseconds kMinInitiationInterval{20};
// With no new handshake for this long, every key of the peer is erased.
inline constexpr std::chrono::seconds kZeroKeysAfter = kRejectAfterTime * 3;

}  // namespace tunnelmesh::noise
