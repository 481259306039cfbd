// Challenges for Register's proof of possession (lib/crypto/control_proofs.h). The coordinator
// keeps no state per Hello: a challenge is a timestamp, random bytes and a MAC under a secret of
// this process, so that it can be checked when Register echoes it. A challenge is accepted once,
// within `lifetime` of its issue; the ones accepted are remembered until they expire (bounded).
// The X25519 key the proofs are made against is fresh per process too: a coordinator restart
// invalidates outstanding challenges, and the agent asks again.
//
// Thread-safe: mu_ guards the set of used challenges; the rest is immutable after construction.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {

class ChallengeBook {
 public:
  struct Options {
    absl::Duration lifetime = absl::Minutes(1);
    // Challenges remembered as used at most; beyond that Register is refused until some expire
    // (only a flood of valid registrations within `lifetime` reaches it).
    size_t max_used = 65536;
  };

  explicit ChallengeBook(Options options);

  std::string Issue(absl::Time now) const;
  // Accepts a challenge this book issued, not older than the lifetime and not used before.
  // ABORTED for a stale, foreign or reused one (the agent asks for a fresh one).
  [[nodiscard]] absl::Status Consume(std::string_view challenge, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);

  const PublicKey& ephemeral_public_key() const { return ephemeral_public_; }
  const SecretKey& ephemeral_private_key() const { return ephemeral_private_; }

 private:
  const Options options_;
  const SecretKey mac_key_;
  const SecretKey ephemeral_private_;
  const PublicKey ephemeral_public_;
  absl::Mutex mu_;
  // Random parts of accepted challenges, and the same by when they expire (for pruning).
  std::set<std::string> used_ ABSL_GUARDED_BY(mu_);
  std::multimap<absl::Time, std::string> expiries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
