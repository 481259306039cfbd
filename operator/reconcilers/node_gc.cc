#include "operator/reconcilers/node_gc.h"

#include "lib/base/log.h"
#include "operator/kube/api_status.h"
#include "operator/reconcilers/status_writer.h"

namespace tunnelmesh {

kube::Informer::Handlers NodeGarbageCollector::Handlers() {
  kube::Informer::Handlers h;
  h.on_delete = [this](const nlohmann::json& node) { Collect(ObjectName(node)); };
  h.on_synced = [this] { Collect(""); };
  return h;
}

bool NodeGarbageCollector::NodeExists(const std::string& name) const {
  return informer_ != nullptr && informer_->Find("", name).has_value();
}

void NodeGarbageCollector::Collect(const std::string& node) {
  for (const MemberStatus& member : coordinator_->Members()) {
    auto label = member.record.labels.find(kNodeLabel);
    if (label == member.record.labels.end()) continue;
    if (node.empty() ? NodeExists(label->second) : label->second != node) continue;
    absl::Status s = coordinator_->Leave(member.record.public_key);
    if (s.ok()) {
      TM_LOG_INFO("Node {} is gone: removed its member {}", label->second, member.record.name);
    } else {
      TM_LOG_WARN("Node {} is gone, but removing member {} failed (retried at the next Node "
                  "list): {}", label->second, member.record.name, std::string(s.message()));
    }
  }
}

}  // namespace tunnelmesh
