#include "operator/coordinator/challenges.h"

#include <sodium.h>

#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"

namespace tunnelmesh {
namespace {

// timestamp (8, unix milliseconds, big endian) | random (16) | MAC (16)
constexpr size_t kTimeSize = 8;
constexpr size_t kRandomSize = 16;
constexpr size_t kChallengeSize = kTimeSize + kRandomSize + kMacSize;
// Clocks do not go backwards much; a challenge from the future is someone else's.
constexpr absl::Duration kClockSlack = absl::Seconds(5);

void Mac(const SecretKey& key, const uint8_t* data, size_t size, uint8_t out[kMacSize]) {
  Blake2sMac(Bytes(key.data(), kKeySize), Bytes(data, size), out);
}

}  // namespace

ChallengeBook::ChallengeBook(Options options)
    : options_(options),
      mac_key_(SecretKey::Random()),
      ephemeral_private_(SecretKey::GeneratePrivate()),
      ephemeral_public_(DerivePublicKey(ephemeral_private_)) {}

std::string ChallengeBook::Issue(absl::Time now) const {
  uint8_t out[kChallengeSize];
  const uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(now));
  for (size_t i = 0; i < kTimeSize; ++i) out[i] = static_cast<uint8_t>(ms >> (56 - 8 * i));
  RandomBytes(absl::Span<uint8_t>(out + kTimeSize, kRandomSize));
  Mac(mac_key_, out, kTimeSize + kRandomSize, out + kTimeSize + kRandomSize);
  return std::string(reinterpret_cast<const char*>(out), sizeof(out));
}

absl::Status ChallengeBook::Consume(std::string_view challenge, absl::Time now) {
  if (challenge.size() != kChallengeSize) {
    return absl::AbortedError(
        "no valid challenge: call Hello first (agent older than the "
        "coordinator? upgrade it)");
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(challenge.data());
  uint8_t mac[kMacSize];
  Mac(mac_key_, bytes, kTimeSize + kRandomSize, mac);
  if (sodium_memcmp(mac, bytes + kTimeSize + kRandomSize, kMacSize) != 0) {
    return absl::AbortedError(
        "the challenge was not issued by this coordinator process (it may "
        "have restarted): ask for a new one");
  }
  uint64_t ms = 0;
  for (size_t i = 0; i < kTimeSize; ++i) ms = ms << 8 | bytes[i];
  const absl::Time issued = absl::FromUnixMillis(static_cast<int64_t>(ms));
  if (now - issued > options_.lifetime || issued - now > kClockSlack) {
    return absl::AbortedError("the challenge expired: ask for a new one");
  }
  const std::string random(challenge.substr(kTimeSize, kRandomSize));
  absl::MutexLock lock(&mu_);
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    used_.erase(expiries_.begin()->second);
    expiries_.erase(expiries_.begin());
  }
  if (used_.count(random) > 0) return absl::AbortedError("the challenge was used already");
  if (used_.size() >= options_.max_used) {
    return absl::ResourceExhaustedError("too many registrations in the last minute; retry later");
  }
  used_.insert(random);
  expiries_.emplace(issued + options_.lifetime, random);
  return absl::OkStatus();
}

}  // namespace tunnelmesh
