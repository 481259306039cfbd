// How answers of the Kubernetes API server become absl::Status. Pure functions, so that the
// mapping is tested on its own and fuzzed on bytes from the network.
//
// HTTP status (and the metav1.Status `reason` in the body) -> code:
//   404 NotFound -> kNotFound; 409 with reason AlreadyExists -> kAlreadyExists; other 409
//   (optimistic concurrency conflict) -> kAborted; 410 Gone / Expired (resource version too old,
//   watchers relist) -> kOutOfRange; 401 -> kUnauthenticated; 403 -> kPermissionDenied; 400 and
//   422 -> kInvalidArgument; 429, 5xx -> kUnavailable; 405, 406, 415 -> kUnimplemented; other
//   codes -> kUnknown.
// The message names what was requested ("GET /api/v1/..."), the HTTP status and the API server's
// Status.message (which names the forbidden verb and resource, or the invalid field).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh::kube {

// `http_status` and `body` of a response to the request `what`; OK for 2xx.
absl::Status StatusFromResponse(int http_status, std::string_view body, std::string_view what);

// A metav1.Status object, as carried by an ERROR watch event; its `code` decides, or
// `http_status` when it has none.
absl::Status StatusFromApiStatus(const nlohmann::json& status, int http_status,
                                 std::string_view what);

// The canonical code for an HTTP status and a Status reason.
absl::StatusCode CodeForHttpStatus(int http_status, std::string_view reason);

// Text from the network made safe for logs: control characters replaced, cut at `max` bytes.
std::string Printable(std::string_view text, size_t max = 512);

// (absl::IsNotFound and absl::IsAlreadyExists cover those two codes.)
// An update lost an optimistic concurrency race: read again and retry.
inline bool IsConflict(const absl::Status& s) { return s.code() == absl::StatusCode::kAborted; }
// A list or watch from a resource version the server no longer has: relist.
inline bool IsGone(const absl::Status& s) { return s.code() == absl::StatusCode::kOutOfRange; }

}  // namespace tunnelmesh::kube
