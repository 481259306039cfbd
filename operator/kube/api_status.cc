#include "operator/kube/api_status.h"

#include <string>

#include "operator/kube/resource.h"

namespace tunnelmesh::kube {

std::string Printable(std::string_view text, size_t max) {
  std::string out(text.substr(0, max));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  if (text.size() > max) out += "...";
  return out;
}

absl::StatusCode CodeForHttpStatus(int http_status, std::string_view reason) {
  switch (http_status) {
    case 400:
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 405:
    case 406:
    case 415:
      return absl::StatusCode::kUnimplemented;
    case 409:
      return reason == "AlreadyExists" ? absl::StatusCode::kAlreadyExists
                                       : absl::StatusCode::kAborted;
    case 410:
      return absl::StatusCode::kOutOfRange;
    case 429:
      return absl::StatusCode::kUnavailable;
    default:
      break;
  }
  if (http_status >= 500 && http_status <= 599) return absl::StatusCode::kUnavailable;
  if (http_status >= 200 && http_status <= 299) return absl::StatusCode::kOk;
  return absl::StatusCode::kUnknown;
}

absl::Status StatusFromApiStatus(const nlohmann::json& status, int http_status,
                                 std::string_view what) {
  int code = http_status;
  if (status.is_object()) {
    auto it = status.find("code");
    if (it != status.end() && it->is_number_integer()) {
      const int64_t value = it->get<int64_t>();
      if (value >= 100 && value <= 599) code = static_cast<int>(value);
    }
  }
  const std::string reason = StringAt(status, "reason");
  absl::StatusCode canonical = CodeForHttpStatus(code, reason);
  // A Status object never means success, even with a 2xx code (a watch ERROR event).
  if (canonical == absl::StatusCode::kOk) canonical = absl::StatusCode::kUnknown;
  std::string message = std::string(what) + ": HTTP " + std::to_string(code);
  if (!reason.empty()) message += " " + Printable(reason, 64);
  const std::string text = StringAt(status, "message");
  if (!text.empty()) message += ": " + Printable(text);
  return absl::Status(canonical, message);
}

absl::Status StatusFromResponse(int http_status, std::string_view body, std::string_view what) {
  if (http_status >= 200 && http_status <= 299) return absl::OkStatus();
  nlohmann::json parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && StringAt(parsed, "kind") == "Status") {
    return StatusFromApiStatus(parsed, http_status, what);
  }
  absl::StatusCode canonical = CodeForHttpStatus(http_status, "");
  std::string message = std::string(what) + ": HTTP " + std::to_string(http_status);
  if (!body.empty()) message += ": " + Printable(body, 200);
  return absl::Status(canonical, message);
}

}  // namespace tunnelmesh::kube
