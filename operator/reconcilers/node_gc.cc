#include "operator/reconcilers/node_gc.h"

#include <set>

#include "lib/base/log.h"

namespace tunnelmesh {

std::vector<std::string> NodeGarbageCollector::NodeNames() const {
  std::set<std::string> names;
  for (const MemberStatus& member : coordinator_->Members()) {
    auto label = member.record.labels.find(kNodeLabel);
    if (label != member.record.labels.end()) names.insert(label->second);
  }
  return {names.begin(), names.end()};
}

absl::StatusOr<Result> NodeGarbageCollector::Reconcile(const std::string& node) {
  if (nodes_->Find("", node).has_value()) return Result{};
  absl::StatusOr<nlohmann::json> live = api_->Get(kube::kNodes, "", node);
  if (live.ok()) return Result{};  // The cache lags.
  if (!absl::IsNotFound(live.status())) return live.status();
  absl::Status first_error;
  for (const MemberStatus& member : coordinator_->Members()) {
    auto label = member.record.labels.find(kNodeLabel);
    if (label == member.record.labels.end() || label->second != node) continue;
    absl::Status s = coordinator_->Leave(member.record.public_key);
    if (s.ok()) {
      TM_LOG_INFO("Node {} is gone: removed its member {}", node, member.record.name);
    } else if (first_error.ok()) {
      first_error =
          absl::Status(s.code(), "Node " + node + " is gone, but removing member " +
                                     member.record.name + " failed: " + std::string(s.message()));
    }
  }
  return first_error.ok() ? absl::StatusOr<Result>(Result{}) : first_error;
}

}  // namespace tunnelmesh
