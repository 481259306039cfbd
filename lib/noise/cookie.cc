#include "lib/noise/cookie.h"

#include <sodium.h>

#include <cstring>

#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"
#include "lib/noise/constants.h"

namespace tunnelmesh::noise {
namespace {

using wire::kMacsSize;

// mac1 covers everything before it; mac2 covers everything before it, including mac1.
Bytes Mac1Input(absl::Span<const uint8_t> m) { return Bytes(m.data(), m.size() - kMacsSize); }
Bytes Mac2Input(absl::Span<const uint8_t> m) { return Bytes(m.data(), m.size() - 16); }
const uint8_t* Mac1Of(absl::Span<const uint8_t> m) { return m.data() + m.size() - kMacsSize; }
const uint8_t* Mac2Of(absl::Span<const uint8_t> m) { return m.data() + m.size() - 16; }

}  // namespace

CookieChecker::CookieChecker(const StaticIdentity& local) {
  std::memcpy(mac1_key_, local.mac1_key, 32);
  std::memcpy(cookie_key_, local.cookie_key, 32);
}

void CookieChecker::CookieFor(absl::Span<const uint8_t> source, MonoTime now, uint8_t out[16]) {
  if (!secret_valid_ || now - secret_birth_ >= kCookieRefreshTime) {
    RandomBytes(absl::Span<uint8_t>(secret_, sizeof(secret_)));
    secret_birth_ = now;
    secret_valid_ = true;
  }
  Blake2sMac(Bytes(secret_, sizeof(secret_)), source, out);
}

CookieChecker::MacState CookieChecker::Check(absl::Span<const uint8_t> message,
                                             absl::Span<const uint8_t> source, MonoTime now) {
  if (message.size() < kMacsSize) return MacState::kInvalidMac1;
  uint8_t expected[16];
  Blake2sMac(Bytes(mac1_key_, 32), Mac1Input(message), expected);
  if (sodium_memcmp(expected, Mac1Of(message), 16) != 0) return MacState::kInvalidMac1;
  uint8_t cookie[16];
  {
    absl::MutexLock lock(&mu_);
    // A secret older than its lifetime makes no valid cookies: the initiator must get a new one.
    if (!secret_valid_ || now - secret_birth_ >= kCookieRefreshTime) return MacState::kValidMac1;
    Blake2sMac(Bytes(secret_, sizeof(secret_)), source, cookie);
  }
  Blake2sMac(Bytes(cookie, 16), Mac2Input(message), expected);
  if (sodium_memcmp(expected, Mac2Of(message), 16) != 0) return MacState::kValidMac1;
  return MacState::kValidMac1AndCookie;
}

void CookieChecker::MakeReply(absl::Span<const uint8_t> message, uint32_t sender_index,
                              absl::Span<const uint8_t> source, MonoTime now,
                              wire::CookieReply* out) {
  uint8_t cookie[16];
  {
    absl::MutexLock lock(&mu_);
    CookieFor(source, now, cookie);
  }
  out->receiver_index = sender_index;
  RandomBytes(absl::Span<uint8_t>(out->nonce.data(), out->nonce.size()));
  XAeadSeal(cookie_key_, out->nonce.data(), Bytes(cookie, 16), Bytes(Mac1Of(message), 16),
            out->encrypted_cookie.data());
  sodium_memzero(cookie, sizeof(cookie));
}

void CookieJar::AddMacs(absl::Span<uint8_t> message, const PeerStatics& peer, MonoTime now) {
  uint8_t* mac1 = message.data() + message.size() - kMacsSize;
  uint8_t* mac2 = message.data() + message.size() - 16;
  Blake2sMac(Bytes(peer.mac1_key, 32), Mac1Input(message), mac1);
  std::memcpy(last_mac1_, mac1, 16);
  last_mac1_valid_ = true;
  if (has_fresh_cookie(now)) {
    Blake2sMac(Bytes(cookie_, 16), Mac2Input(message), mac2);
  } else {
    std::memset(mac2, 0, 16);
  }
}

bool CookieJar::Consume(const wire::CookieReply& reply, const PeerStatics& peer, MonoTime now) {
  if (!last_mac1_valid_) return false;
  uint8_t cookie[16];
  if (!XAeadOpen(peer.cookie_key, reply.nonce.data(),
                 Bytes(reply.encrypted_cookie.data(), reply.encrypted_cookie.size()),
                 Bytes(last_mac1_, 16), cookie)) {
    return false;
  }
  std::memcpy(cookie_, cookie, 16);
  cookie_birth_ = now;
  cookie_valid_ = true;
  // One reply per stamped message: a second copy cannot be replayed to refresh the cookie.
  last_mac1_valid_ = false;
  return true;
}

}  // namespace tunnelmesh::noise
