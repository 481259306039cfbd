// Reading Kubernetes objects held as nlohmann::json: the one set of field accessors for the
// operator. Objects from the cluster may hold any shape (anyone allowed to write them can put
// anything the schema lets through), and nlohmann's value(), get<>() and const operator[] must not
// see a wrong one, so every accessor here answers "absent" (null, "", 0, false) for a wrong type.
#pragma once

#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"

namespace tunnelmesh::kube {

// object[key] when `object` is a JSON object that has it, else null.
const nlohmann::json& Field(const nlohmann::json& object, const char* key);
// object[key] when `object` is a JSON object with a string there, else "".
std::string StringAt(const nlohmann::json& object, const char* key);
// object.metadata[key], likewise.
std::string MetadataString(const nlohmann::json& object, const char* key);
// metadata.namespace and metadata.name of an object, empty when absent or not strings.
std::string ObjectNamespace(const nlohmann::json& object);
std::string ObjectName(const nlohmann::json& object);
// "namespace/name", or "name" for a cluster-scoped object: the key of work queues and caches.
std::string ObjectKey(const nlohmann::json& object);
// metadata.deletionTimestamp is set: the object waits for its finalizers.
bool BeingDeleted(const nlohmann::json& object);
// The object's status as an object (empty when missing or malformed).
nlohmann::json ObjectStatus(const nlohmann::json& object);
// metadata.generation, 0 when absent.
int64_t ObjectGeneration(const nlohmann::json& object);

}  // namespace tunnelmesh::kube
