#include "operator/kube/conditions.h"

#include <string>

namespace tunnelmesh::kube {

std::string_view ConditionStatusName(ConditionStatus status) {
  switch (status) {
    case ConditionStatus::kTrue:
      return "True";
    case ConditionStatus::kFalse:
      return "False";
    case ConditionStatus::kUnknown:
      break;
  }
  return "Unknown";
}

bool SetCondition(nlohmann::json* status, std::string type, ConditionStatus condition_status,
                  std::string reason, std::string message, int64_t observed_generation,
                  absl::Time now) {
  if (!status->is_object()) *status = nlohmann::json::object();
  nlohmann::json& conditions = (*status)["conditions"];
  if (!conditions.is_array()) conditions = nlohmann::json::array();
  const std::string status_name(ConditionStatusName(condition_status));
  nlohmann::json wanted = {{"type", type},
                           {"status", status_name},
                           {"reason", std::move(reason)},
                           {"message", std::move(message)},
                           {"observedGeneration", observed_generation},
                           {"lastTransitionTime", FormatRfc3339(now)}};
  for (nlohmann::json& condition : conditions) {
    if (!condition.is_object() || condition.value("type", "") != type) continue;
    if (condition.value("status", "") == status_name && condition.contains("lastTransitionTime")) {
      wanted["lastTransitionTime"] = condition["lastTransitionTime"];
    }
    if (condition == wanted) return false;
    condition = std::move(wanted);
    return true;
  }
  conditions.push_back(std::move(wanted));
  return true;
}

bool SetCondition(nlohmann::json* status, std::string type, bool status_true, std::string reason,
                  std::string message, int64_t observed_generation, absl::Time now) {
  return SetCondition(status, std::move(type),
                      status_true ? ConditionStatus::kTrue : ConditionStatus::kFalse,
                      std::move(reason), std::move(message), observed_generation, now);
}

const nlohmann::json* FindCondition(const nlohmann::json& status, std::string_view type) {
  if (!status.is_object()) return nullptr;
  auto conditions = status.find("conditions");
  if (conditions == status.end() || !conditions->is_array()) return nullptr;
  for (const nlohmann::json& condition : *conditions) {
    if (condition.is_object() && condition.value("type", "") == type) return &condition;
  }
  return nullptr;
}

std::string FormatRfc3339(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", time, absl::UTCTimeZone());
}

std::string NowRfc3339() { return FormatRfc3339(absl::Now()); }

std::string FormatMicroTime(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E6SZ", time, absl::UTCTimeZone());
}

std::optional<absl::Time> ParseRfc3339(std::string_view text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &time, &error)) return std::nullopt;
  return time;
}

}  // namespace tunnelmesh::kube
