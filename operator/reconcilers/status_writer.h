// Writes the status subresource of a kind's objects only when it changes: it compares the desired
// status with the cached object's and with what it wrote last (the watch echoes a write back a
// little later), so that a periodic reconcile does not write every time. The API call is made
// without holding the writer's lock. Thread-safe.
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "operator/kube/api.h"

namespace tunnelmesh {

class StatusWriter {
 public:
  StatusWriter(kube::Api* api, kube::Resource resource)
      : api_(api), resource_(std::move(resource)) {}

  // Makes `object`'s status `desired` (a merge patch of the status subresource; top-level fields
  // the cached object has and `desired` lacks are removed).
  void Write(const nlohmann::json& object, const nlohmann::json& desired);
  void Forget(const std::string& name);

 private:
  kube::Api* const api_;
  const kube::Resource resource_;
  absl::Mutex mu_;
  std::map<std::string, nlohmann::json> written_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
