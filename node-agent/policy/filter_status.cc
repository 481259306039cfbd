#include "node-agent/policy/filter_status.h"

#include "node-agent/policy/rule_set.h"

namespace tunnelmesh::policy {
namespace {

// Checked reads of a reply that may be malformed: a missing or wrongly typed field reads as the
// fallback, never throws.
bool BoolOr(const nlohmann::json& object, const char* key, bool fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}
std::string StringOr(const nlohmann::json& object, const char* key, const std::string& fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}
uint64_t AsCount(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() > 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return 0;
}
uint64_t UnsignedOr0(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() ? AsCount(*it) : 0;
}

}  // namespace

nlohmann::json FilterStatusJson(const filter::Filter& filter, const filter::RuleSet* rules,
                                const RuleSetHistory& history) {
  nlohmann::json out;
  const bool enabled = filter.enabled() && rules != nullptr;
  out["enabled"] = enabled;
  if (enabled) {
    out["default_action"] = ActionName(rules->default_action);
    out["rules"] = rules->rules.size();
    out["policy_count"] = rules->policies.size();
    out["egress_prefixes"] = rules->egress.size();
  } else {
    out["rules"] = 0;
    out["policy_count"] = 0;
    out["egress_prefixes"] = 0;
  }
  nlohmann::json policies = nlohmann::json::array();
  nlohmann::json by_default = {{"allowed", 0}, {"denied", 0}};
  for (const filter::PolicyCount& count : filter.policy_counts()) {
    if (count.policy.empty()) {
      by_default = {{"allowed", count.allowed}, {"denied", count.denied}};
      continue;
    }
    policies.push_back(
        {{"name", count.policy}, {"allowed", count.allowed}, {"denied", count.denied}});
  }
  out["policies"] = std::move(policies);
  out["default"] = std::move(by_default);
  nlohmann::json drops = nlohmann::json::object();
  for (size_t i = 0; i < static_cast<size_t>(filter::Drop::kCount); ++i) {
    const auto d = static_cast<filter::Drop>(i);
    drops[filter::DropName(d)] = filter.drops().Get(d);
  }
  out["drops"] = std::move(drops);
  out["tracked_flows"] = filter.tracked_flows();
  out["rule_sets_applied"] = history.applied;
  out["rule_sets_rejected"] = history.rejected;
  return out;
}

std::string FormatFilterStatus(const nlohmann::json& filter) {
  if (!filter.is_object()) return "";
  std::string out = "filter: ";
  if (!BoolOr(filter, "enabled", false)) {
    out += "off (no rule set)";
  } else {
    out += "on, default " + StringOr(filter, "default_action", "deny") + ", " +
           std::to_string(UnsignedOr0(filter, "rules")) + " rules from " +
           std::to_string(UnsignedOr0(filter, "policy_count")) + " policies, " +
           std::to_string(UnsignedOr0(filter, "tracked_flows")) + " flows tracked";
  }
  uint64_t total = 0;
  std::string reasons;
  if (auto drops = filter.find("drops"); drops != filter.end() && drops->is_object()) {
    for (const auto& [name, count] : drops->items()) {
      const uint64_t n = AsCount(count);
      if (n == 0) continue;
      total += n;
      reasons += (reasons.empty() ? "" : " ") + name + "=" + std::to_string(n);
    }
  }
  if (total > 0) out += ", dropped " + std::to_string(total) + " (" + reasons + ")";
  const uint64_t rejected = UnsignedOr0(filter, "rule_sets_rejected");
  if (rejected > 0) {
    out += ", " + std::to_string(rejected) + " rule sets rejected (see the agent's log)";
  }
  return out + "\n";
}

}  // namespace tunnelmesh::policy
