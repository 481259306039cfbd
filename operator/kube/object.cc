#include "operator/kube/object.h"

namespace tunnelmesh::kube {

const nlohmann::json& Field(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string StringAt(const nlohmann::json& object, const char* key) {
  const nlohmann::json& value = Field(object, key);
  return value.is_string() ? value.get<std::string>() : "";
}

std::string MetadataString(const nlohmann::json& object, const char* key) {
  return StringAt(Field(object, "metadata"), key);
}

std::string ObjectNamespace(const nlohmann::json& object) {
  return MetadataString(object, "namespace");
}

std::string ObjectName(const nlohmann::json& object) { return MetadataString(object, "name"); }

std::string ObjectKey(const nlohmann::json& object) {
  const std::string ns = ObjectNamespace(object);
  return ns.empty() ? ObjectName(object) : ns + "/" + ObjectName(object);
}

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

}  // namespace tunnelmesh::kube
