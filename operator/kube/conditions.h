// status.conditions in the Kubernetes convention (metav1.Condition: type, status, reason,
// message, lastTransitionTime, observedGeneration), and the API's time formats.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh::kube {

enum class ConditionStatus { kTrue, kFalse, kUnknown };

// "True", "False" or "Unknown".
std::string_view ConditionStatusName(ConditionStatus status);

// Sets the condition `type` in `status`->conditions (a list keyed by type, created if missing).
// lastTransitionTime becomes `now` only when the condition is new or its status changes. Returns
// true when anything changed, so that callers write the status only then.
bool SetCondition(nlohmann::json* status, std::string type, ConditionStatus condition_status,
                  std::string reason, std::string message, int64_t observed_generation,
                  absl::Time now = absl::Now());
// The same with true -> "True", false -> "False".
bool SetCondition(nlohmann::json* status, std::string type, bool status_true, std::string reason,
                  std::string message, int64_t observed_generation, absl::Time now = absl::Now());
// A string literal would silently convert to bool: use ConditionStatus instead.
bool SetCondition(nlohmann::json* status, std::string type, const char* condition_status,
                  std::string reason, std::string message, int64_t observed_generation,
                  absl::Time now = absl::Now()) = delete;

// The condition `type` in status.conditions, or nullptr.
const nlohmann::json* FindCondition(const nlohmann::json& status, std::string_view type);

// metav1.Time: RFC 3339 in UTC with whole seconds, "2026-11-25T11:40:00Z".
std::string FormatRfc3339(absl::Time time);
std::string NowRfc3339();
// metav1.MicroTime (Lease acquireTime/renewTime): "2026-11-25T11:40:00.123456Z".
std::string FormatMicroTime(absl::Time time);
// Parses RFC 3339 with any fraction and "Z" or a numeric offset.
std::optional<absl::Time> ParseRfc3339(std::string_view text);

}  // namespace tunnelmesh::kube
