#include "operator/kube/token_review.h"

#include "operator/kube/object.h"

namespace tunnelmesh::kube {

absl::StatusOr<std::string> ReviewToken(Api* api, const std::string& token) {
  const nlohmann::json review = {{"apiVersion", "authentication.k8s.io/v1"},
                                 {"kind", "TokenReview"},
                                 {"spec", {{"token", token}}}};
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
  const std::string name = StringAt(Field(status, "user"), "username");
  if (name.empty()) return absl::UnauthenticatedError("the TokenReview named no user");
  return name;
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

}  // namespace tunnelmesh::kube
