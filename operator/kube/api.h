// The Kubernetes API as the operator uses it: typed-resource get, list, create, update (replace),
// patch, delete, status update and watch, on objects as nlohmann::json the way the API server
// sends them. Reconcilers, informers, leader election, events and the MeshPeer member store talk
// to this interface only, so that unit tests run them over kube::testing::FakeApi
// (testing/fake_api.h); the process uses kube::HttpApi (http_api.h, cpprestsdk).
//
// Errors: absl::Status with the codes of api_status.h (404 kNotFound, 409 kAlreadyExists on
// create / kAborted on a stale resourceVersion, 410 kOutOfRange, 401, 403, 400/422
// kInvalidArgument, 429/5xx/connection errors/timeouts kUnavailable); messages name the request.
//
// Thread-safety: implementations are shared by the whole process; every method may be called
// from any thread at once and blocks its caller. An Api must outlive every call in progress.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "operator/kube/api_status.h"
#include "operator/kube/resource.h"

namespace tunnelmesh::kube {

class Api {
 public:
  virtual ~Api() = default;

  // `ns` is ignored for cluster-scoped resources.
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> Get(const Resource& resource,
                                                           const std::string& ns,
                                                           const std::string& name) = 0;
  // The List object (items + metadata.resourceVersion), all pages. `ns` empty on a namespaced
  // resource lists all namespaces. kOutOfRange: list again.
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> List(
      const Resource& resource, const std::string& ns, const std::string& label_selector = "",
      const std::string& field_selector = "") = 0;
  // POST to the collection; the namespace is `ns`, else the object's metadata.namespace. Also
  // creates objects that are only ever created (TokenReview).
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> Create(const Resource& resource,
                                                              const std::string& ns,
                                                              const nlohmann::json& object) = 0;
  // PUT of the object at metadata.name; with metadata.resourceVersion a stale object is kAborted.
  // On a resource with a status subresource the status is left as it is.
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> Update(const Resource& resource,
                                                              const std::string& ns,
                                                              const nlohmann::json& object) = 0;
  // PUT .../status: only the status changes.
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> UpdateStatus(
      const Resource& resource, const std::string& ns, const nlohmann::json& object) = 0;
  // PATCH of the object, or of its status subresource.
  [[nodiscard]] virtual absl::StatusOr<nlohmann::json> Patch(const Resource& resource,
                                                             const std::string& ns,
                                                             const std::string& name,
                                                             const nlohmann::json& patch,
                                                             PatchType type = PatchType::kMerge,
                                                             bool status_subresource = false) = 0;
  // With `uid_precondition`, deletes only that incarnation of the object (else kAborted). An
  // object with finalizers is only marked (metadata.deletionTimestamp) until they are removed.
  [[nodiscard]] virtual absl::Status Delete(const Resource& resource, const std::string& ns,
                                            const std::string& name,
                                            const std::string& uid_precondition = "") = 0;
  // Streams a watch from `resource_version`, calling `on_event` on the calling thread for each
  // event (BOOKMARKs included) until the stream ends (OK, after about `timeout_seconds`),
  // `on_event` returns false (OK), *stop becomes true (checked at least every 0.5 s; kCancelled),
  // or an error (a version too old is kOutOfRange).
  [[nodiscard]] virtual absl::Status Watch(const Resource& resource, const std::string& ns,
                                           const std::string& resource_version, int timeout_seconds,
                                           const std::function<bool(const WatchEvent&)>& on_event,
                                           const std::atomic<bool>* stop,
                                           const std::string& label_selector = "") = 0;
};

}  // namespace tunnelmesh::kube
