#include "operator/reconcilers/status_writer.h"

#include "lib/base/log.h"
#include "operator/kube/api_status.h"

namespace tunnelmesh {

std::string ObjectName(const nlohmann::json& object) {
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return "";
  return metadata->value("name", std::string());
}

nlohmann::json ObjectStatus(const nlohmann::json& object) {
  auto status = object.find("status");
  return status != object.end() && status->is_object() ? *status : nlohmann::json::object();
}

int64_t ObjectGeneration(const nlohmann::json& object) {
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return 0;
  auto generation = metadata->find("generation");
  return generation != metadata->end() && generation->is_number_integer()
             ? generation->get<int64_t>()
             : 0;
}

void StatusWriter::Write(const nlohmann::json& object, const nlohmann::json& desired) {
  const std::string name = ObjectName(object);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto written = written_.find(name);
    if (desired == ObjectStatus(object) ||
        (written != written_.end() && written->second == desired)) {
      return;
    }
    written_[name] = desired;
  }
  absl::StatusOr<nlohmann::json> patched =
      client_->Patch(resource_, "", name, {{"status", desired}}, kube::PatchType::kMerge,
                     /*status_subresource=*/true);
  if (!patched.ok() && !absl::IsNotFound(patched.status())) {
    TM_LOG_WARN("writing status of {} {}: {}", resource_.kind, name,
                std::string(patched.status().message()));
    Forget(name);
  }
}

void StatusWriter::Forget(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  written_.erase(name);
}

}  // namespace tunnelmesh
