#include "operator/kube/token_review.h"

#include <openssl/sha.h>

#include <algorithm>
#include <iterator>
#include <string_view>
#include <utility>

#include "operator/kube/object.h"

namespace tunnelmesh::kube {
namespace {

// "system:serviceaccount:NS:NAME" -> NS; empty for any other user.
std::string ServiceAccountNamespace(const std::string& user) {
  constexpr std::string_view kPrefix = "system:serviceaccount:";
  if (user.rfind(kPrefix, 0) != 0) return "";
  const std::string rest = user.substr(kPrefix.size());
  const size_t colon = rest.find(':');
  return colon == std::string::npos ? "" : rest.substr(0, colon);
}

// The first value of user.extra[key] (extra values are lists of strings).
std::string ExtraValue(const nlohmann::json& user, const char* key) {
  const nlohmann::json& values = Field(Field(user, "extra"), key);
  if (!values.is_array() || values.empty() || !values[0].is_string()) return "";
  return values[0].get<std::string>();
}

std::string Sha256(const std::string& token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

}  // namespace

absl::StatusOr<ReviewedToken> ReviewToken(Api* api, const std::string& token,
                                          const std::vector<std::string>& audiences) {
  nlohmann::json spec = {{"token", token}};
  if (!audiences.empty()) spec["audiences"] = audiences;
  const nlohmann::json review = {
      {"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenReview"}, {"spec", spec}};
  absl::StatusOr<nlohmann::json> answer = api->Create(kTokenReviews, "", review);
  if (!answer.ok()) {
    return absl::UnavailableError("checking the ServiceAccount token with the API server: " +
                                  std::string(answer.status().message()));
  }
  const nlohmann::json& status = Field(*answer, "status");
  const nlohmann::json& authenticated = Field(status, "authenticated");
  if (!authenticated.is_boolean() || !authenticated.get<bool>()) {
    const std::string error = StringAt(status, "error");
    return absl::UnauthenticatedError("the API server did not accept the ServiceAccount token" +
                                      (error.empty() ? std::string() : ": " + error));
  }
  ReviewedToken out;
  const nlohmann::json& user = Field(status, "user");
  out.user = StringAt(user, "username");
  if (out.user.empty()) return absl::UnauthenticatedError("the TokenReview named no user");
  const nlohmann::json& audience_list = Field(status, "audiences");
  if (audience_list.is_array()) {
    for (const nlohmann::json& a : audience_list) {
      if (a.is_string()) out.audiences.push_back(a.get<std::string>());
    }
  }
  out.pod_name = ExtraValue(user, kExtraPodName);
  if (!out.pod_name.empty()) out.pod_namespace = ServiceAccountNamespace(out.user);
  out.node = ExtraValue(user, kExtraNodeName);
  return out;
}

absl::StatusOr<ReviewedToken> ReviewBoundToken(Api* api, const std::string& token,
                                               const std::vector<std::string>& audiences) {
  absl::StatusOr<ReviewedToken> reviewed = ReviewToken(api, token, audiences);
  if (!reviewed.ok() || !reviewed->node.empty() || reviewed->pod_name.empty() ||
      reviewed->pod_namespace.empty()) {
    return reviewed;
  }
  absl::StatusOr<nlohmann::json> pod = api->Get(kPods, reviewed->pod_namespace, reviewed->pod_name);
  if (!pod.ok()) {
    if (pod.status().code() == absl::StatusCode::kNotFound) {
      return absl::UnauthenticatedError("the ServiceAccount token is bound to pod " +
                                        reviewed->pod_namespace + "/" + reviewed->pod_name +
                                        ", which no longer exists");
    }
    return absl::UnavailableError("reading the token's pod " + reviewed->pod_namespace + "/" +
                                  reviewed->pod_name +
                                  " for its node (the operator needs get "
                                  "on pods there): " +
                                  std::string(pod.status().message()));
  }
  reviewed->node = StringAt(Field(*pod, "spec"), "nodeName");
  return reviewed;
}

absl::StatusOr<std::string> ServiceAccountUser(const std::string& ns_slash_name,
                                               const std::string& flag) {
  const size_t slash = ns_slash_name.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == ns_slash_name.size() ||
      ns_slash_name.find('/', slash + 1) != std::string::npos) {
    return absl::InvalidArgumentError(flag + " \"" + ns_slash_name + "\" must be NAMESPACE/NAME");
  }
  return "system:serviceaccount:" + ns_slash_name.substr(0, slash) + ":" +
         ns_slash_name.substr(slash + 1);
}

TokenReviewCache::TokenReviewCache(ReviewFn review, Options options)
    : review_(std::move(review)),
      options_(std::move(options)),
      tokens_(options_.max_per_second),
      refilled_(options_.now()) {}

absl::StatusOr<ReviewedToken> TokenReviewCache::Review(const std::string& token) {
  const std::string key = Sha256(token);
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.now();
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second.expires > now) {
      ++counters_.cache_hits;
      return it->second.result;
    }
    tokens_ = std::min(options_.max_per_second,
                       tokens_ + absl::ToDoubleSeconds(now - refilled_) * options_.max_per_second);
    refilled_ = now;
    if (tokens_ < 1) {
      ++counters_.rate_limited;
      return absl::UnavailableError(
          "too many ServiceAccount token reviews right now: the coordinator limits them to "
          "protect the API server; retry in a second");
    }
    tokens_ -= 1;
    ++counters_.reviews;
  }
  absl::StatusOr<ReviewedToken> result = review_(token);
  if (result.ok() || result.status().code() == absl::StatusCode::kUnauthenticated) {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.now();
    if (cache_.size() >= options_.max_entries) EvictLocked(now);
    cache_[key] = Entry{result, now + options_.ttl};
  }
  return result;
}

void TokenReviewCache::EvictLocked(absl::Time now) {
  for (auto it = cache_.begin(); it != cache_.end();) {
    it = it->second.expires <= now ? cache_.erase(it) : std::next(it);
  }
  // Still full of live entries (a flood of distinct tokens): drop them all rather than grow; the
  // rate limit bounds what refilling costs.
  if (cache_.size() >= options_.max_entries) cache_.clear();
}

TokenReviewCache::Counters TokenReviewCache::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace tunnelmesh::kube
