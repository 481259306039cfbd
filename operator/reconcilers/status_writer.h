// Writes the status subresource of a kind's objects only when it changes: it compares the desired
// status with the cached object's and with what it wrote last (the watch echoes a write back a
// little later), so that a periodic reconcile does not write every tick. Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "nlohmann/json.hpp"
#include "operator/kube/client.h"

namespace tunnelmesh {

class StatusWriter {
 public:
  StatusWriter(kube::Client* client, kube::Resource resource)
      : client_(client), resource_(std::move(resource)) {}

  // Makes `object`'s status `desired` (a merge patch of the status subresource).
  void Write(const nlohmann::json& object, const nlohmann::json& desired);
  void Forget(const std::string& name);

 private:
  kube::Client* const client_;
  const kube::Resource resource_;
  std::mutex mu_;
  std::map<std::string, nlohmann::json> written_;
};

// object[key] when `object` is a JSON object that has it, else null: objects from the cluster may
// hold any shape, and nlohmann's value() and const operator[] must not see a wrong one.
const nlohmann::json& Field(const nlohmann::json& object, const char* key);
// The object's metadata.name, or "".
std::string ObjectName(const nlohmann::json& object);
bool BeingDeleted(const nlohmann::json& object);
// The object's status as an object (empty when missing or malformed).
nlohmann::json ObjectStatus(const nlohmann::json& object);
int64_t ObjectGeneration(const nlohmann::json& object);

}  // namespace tunnelmesh
