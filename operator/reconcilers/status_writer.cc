#include "operator/reconcilers/status_writer.h"

#include "lib/base/log.h"
#include "operator/kube/api_status.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {

const nlohmann::json& Field(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string ObjectName(const nlohmann::json& object) { return kube::MetadataString(object, "name"); }

bool BeingDeleted(const nlohmann::json& object) {
  return !Field(Field(object, "metadata"), "deletionTimestamp").is_null();
}

nlohmann::json ObjectStatus(const nlohmann::json& object) {
  const nlohmann::json& status = Field(object, "status");
  return status.is_object() ? status : nlohmann::json::object();
}

int64_t ObjectGeneration(const nlohmann::json& object) {
  const nlohmann::json& generation = Field(Field(object, "metadata"), "generation");
  return generation.is_number_integer() ? generation.get<int64_t>() : 0;
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
