// RuleSetInstaller: takes the rule sets the coordinator sends (coord::FilterRules in the network
// map), converts and compiles each into a filter::Matcher and swaps it into the data plane's
// Filter. A rule set that does not convert is logged and counted, and the previous one stays
// installed: a bad map never opens the filter nor stops traffic that was allowed.
//
// Threads: Apply, rules() and history() on the agent's control thread (compiling a large rule set
// takes a while there; the data plane keeps using the old matcher meanwhile). The Filter is
// thread-safe and read by the data-plane threads.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "lib/filter/filter.h"
#include "node-agent/policy/filter_status.h"
#include "node-agent/policy/rule_set.h"

namespace tunnelmesh::policy {

class RuleSetInstaller {
 public:
  // `filter` must outlive the installer.
  explicit RuleSetInstaller(filter::Filter* filter) : filter_(filter) {}

  // Installs `rules`; the error (also logged) names the bad field, and nothing changes then.
  [[nodiscard]] absl::Status Apply(const coord::FilterRules& rules);

  // The installed rule set; null before the first one.
  const filter::RuleSet* rules() const { return matcher_ ? &matcher_->rules() : nullptr; }
  const RuleSetHistory& history() const { return history_; }

 private:
  filter::Filter* const filter_;
  std::shared_ptr<const filter::Matcher> matcher_;
  RuleSetHistory history_;
};

}  // namespace tunnelmesh::policy
