#include "node-agent/policy/installer.h"

#include <string>

#include "lib/base/log.h"

namespace tunnelmesh::policy {

absl::Status RuleSetInstaller::Apply(const coord::FilterRules& rules) {
  absl::StatusOr<filter::RuleSet> set = RuleSetFromProto(rules);
  if (!set.ok()) {
    ++history_.rejected;
    TM_LOG_ERROR(
        "packet filter: the coordinator's rule set is invalid, keeping the previous one: {}",
        std::string(set.status().message()));
    return set.status();
  }
  const size_t count = set->rules.size();
  const size_t policies = set->policies.size();
  const filter::Action default_action = set->default_action;
  matcher_ = std::make_shared<const filter::Matcher>(std::move(*set));
  filter_->SetRules(matcher_);
  ++history_.applied;
  TM_LOG_INFO("packet filter: {} rules from {} policies, default {}", count, policies,
              ActionName(default_action));
  return absl::OkStatus();
}

}  // namespace tunnelmesh::policy
