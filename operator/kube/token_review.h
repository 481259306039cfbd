// TokenReview (authentication.k8s.io/v1): asks the API server whose ServiceAccount token a
// bearer token is. The coordinator admits in-cluster agents by their ServiceAccount this way
// (Coordinator::Options::review_token).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "operator/kube/api.h"

namespace tunnelmesh::kube {

// The user name the API server authenticates `token` as ("system:serviceaccount:NS:NAME").
// kUnauthenticated when the server does not accept the token (its reason appended), kUnavailable
// when the server could not be asked. Blocks on the API server; thread-safe.
[[nodiscard]] absl::StatusOr<std::string> ReviewToken(Api* api, const std::string& token);

// "system:serviceaccount:NS:NAME" for the flag value "NS/NAME"; kInvalidArgument naming `flag`
// when the value is not of that form.
[[nodiscard]] absl::StatusOr<std::string> ServiceAccountUser(const std::string& ns_slash_name,
                                                             const std::string& flag);

}  // namespace tunnelmesh::kube
