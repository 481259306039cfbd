#include "operator/reconcilers/status_writer.h"

#include "lib/base/log.h"
#include "operator/kube/object.h"

namespace tunnelmesh {

void StatusWriter::Write(const nlohmann::json& object, const nlohmann::json& desired) {
  const std::string name = kube::ObjectName(object);
  {
    absl::MutexLock lock(&mu_);
    auto written = written_.find(name);
    if (desired == kube::ObjectStatus(object) ||
        (written != written_.end() && written->second == desired)) {
      return;
    }
    written_[name] = desired;
  }
  // A merge patch keeps the fields it does not name: a field the desired status no longer has is
  // removed by naming it with null.
  nlohmann::json patch = desired;
  const nlohmann::json current = kube::ObjectStatus(object);
  if (current.is_object()) {
    for (const auto& [field, value] : current.items()) {
      if (!desired.contains(field)) patch[field] = nullptr;
    }
  }
  absl::StatusOr<nlohmann::json> patched =
      api_->Patch(resource_, "", name, {{"status", patch}}, kube::PatchType::kMerge,
                  /*status_subresource=*/true);
  if (!patched.ok() && !absl::IsNotFound(patched.status())) {
    TM_LOG_WARN("writing status of {} {}: {}", resource_.kind, name,
                std::string(patched.status().message()));
    Forget(name);
  }
}

void StatusWriter::Forget(const std::string& name) {
  absl::MutexLock lock(&mu_);
  written_.erase(name);
}

}  // namespace tunnelmesh
