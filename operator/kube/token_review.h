// TokenReview (authentication.k8s.io/v1): asks the API server whose ServiceAccount token a
// bearer token is, for which audiences, and which pod (and so which Node) it is bound to. The
// coordinator admits in-cluster agents this way (Coordinator::Options::review_token): the agent
// presents a projected token with audience "tunnelmesh", short-lived and bound to its pod, never
// its API credential. TokenReviewCache keeps unauthenticated Registers from turning into a flood
// of reviews: results are cached by the token's SHA-256 and new reviews are rate-limited.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "operator/kube/api.h"

namespace tunnelmesh::kube {

// Claims of a pod-bound token, as TokenReview reports them in status.user.extra.
inline constexpr char kExtraPodName[] = "authentication.kubernetes.io/pod-name";
inline constexpr char kExtraNodeName[] = "authentication.kubernetes.io/node-name";  // 1.30+

struct ReviewedToken {
  std::string user;                    // "system:serviceaccount:NS:NAME"
  std::vector<std::string> audiences;  // status.audiences
  std::string pod_namespace;           // The ServiceAccount's namespace, when bound to a pod.
  std::string pod_name;                // Empty when the token is not bound to a pod.
  // The Node the token's pod runs on: the node-name claim, else the pod's spec.nodeName (see
  // ReviewBoundToken). Empty when unknown.
  std::string node;
};

// Reviews `token` for `audiences` (none: the API server's own). kUnauthenticated when the server
// does not accept the token (its reason appended; a token for another audience is refused this
// way), kUnavailable when the server could not be asked. Blocks on the API server; thread-safe.
[[nodiscard]] absl::StatusOr<ReviewedToken> ReviewToken(
    Api* api, const std::string& token, const std::vector<std::string>& audiences = {});

// ReviewToken, then, for a pod-bound token without a node-name claim (API servers before 1.30),
// the pod's spec.nodeName (GET pods: the operator's RBAC allows get on pods in the agents'
// namespace). A bound pod that is gone is kUnauthenticated (its token is about to be invalid
// anyway); a pod not yet scheduled has no node.
[[nodiscard]] absl::StatusOr<ReviewedToken> ReviewBoundToken(
    Api* api, const std::string& token, const std::vector<std::string>& audiences);

// "system:serviceaccount:NS:NAME" for the flag value "NS/NAME"; kInvalidArgument naming `flag`
// when the value is not of that form.
[[nodiscard]] absl::StatusOr<std::string> ServiceAccountUser(const std::string& ns_slash_name,
                                                             const std::string& flag);

// Caches reviews by SHA-256 of the token (the token itself is never kept) and limits how many
// reach the API server. A result (accepted, or refused with kUnauthenticated) is reused for
// `ttl`; kUnavailable is not cached. New reviews beyond `max_per_second` (a token bucket with that
// burst) are refused with kUnavailable, which agents retry. Thread-safe: the review runs without
// the cache's lock, so concurrent Registers do not wait for one another's API calls.
class TokenReviewCache {
 public:
  using ReviewFn = std::function<absl::StatusOr<ReviewedToken>(const std::string& token)>;
  struct Options {
    absl::Duration ttl = absl::Seconds(30);
    double max_per_second = 10;
    size_t max_entries = 4096;
    std::function<absl::Time()> now = [] { return absl::Now(); };
  };
  struct Counters {
    uint64_t reviews = 0;  // Calls that reached the API server.
    uint64_t cache_hits = 0;
    uint64_t rate_limited = 0;  // Refused without asking.
  };

  TokenReviewCache(ReviewFn review, Options options);
  [[nodiscard]] absl::StatusOr<ReviewedToken> Review(const std::string& token)
      ABSL_LOCKS_EXCLUDED(mu_);
  Counters counters() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    absl::StatusOr<ReviewedToken> result;
    absl::Time expires;
  };
  void EvictLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ReviewFn review_;
  const Options options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);  // Key: SHA-256 of the token.
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time refilled_ ABSL_GUARDED_BY(mu_);
  Counters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh::kube
