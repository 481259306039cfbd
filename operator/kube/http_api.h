// kube::Api over HTTPS on cpprestsdk: typed-resource CRUD, list with paging, streaming watch.
// Objects are nlohmann::json as the API server sends them. The interface and its contract are in
// api.h; this is the one implementation that talks to a real API server.
//
// Errors: every failure is an absl::Status whose message names the request ("GET /api/v1/...")
// and, when the server answered, the HTTP status and its Status.message; codes follow
// api_status.h (404 kNotFound, 409 kAlreadyExists / kAborted, 410 kOutOfRange, 401, 403, 400/422
// kInvalidArgument, 429/5xx/connection errors/timeouts kUnavailable). No exception leaves this
// library: cpprestsdk's are caught in client.cc, the one boundary.
//
// Thread-safety: an HttpApi is shared by the whole process; every method may be called from any
// thread at once. Calls block the caller (up to Options::request_timeout); do not call them from
// cpprestsdk's own threads. The HttpApi must outlive every call in progress, including Watch().
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/kube/api.h"
#include "operator/kube/api_status.h"
#include "operator/kube/config.h"
#include "operator/kube/resource.h"

namespace tunnelmesh::kube {

struct HttpApiCounters {
  std::atomic<uint64_t> requests{0};      // HTTP requests sent, watches included
  std::atomic<uint64_t> failures{0};      // calls that returned an error (any code)
  std::atomic<uint64_t> list_pages{0};    // pages read by List()
  std::atomic<uint64_t> watches{0};       // Watch() calls
  std::atomic<uint64_t> watch_events{0};  // events passed to Watch() callbacks
  std::atomic<uint64_t> token_reads{0};   // reads of ClusterConfig::token_file
};

class HttpApi final : public Api {
 public:
  struct Options {
    int list_page_size = 500;                            // `limit` of each List page
    absl::Duration request_timeout = absl::Seconds(30);  // one request, not a watch
    absl::Duration token_refresh = absl::Seconds(60);    // re-read token_file after this long
    std::string user_agent = "tunnelmesh-operator";
  };

  // kInvalidArgument when the server URL, CA, client certificate or key is unusable.
  static absl::StatusOr<std::unique_ptr<HttpApi>> Create(ClusterConfig config);
  static absl::StatusOr<std::unique_ptr<HttpApi>> Create(ClusterConfig config, Options options);
  ~HttpApi() override;
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  // `ns` is ignored for cluster-scoped resources.
  [[nodiscard]] absl::StatusOr<nlohmann::json> Get(const Resource& resource, const std::string& ns,
                                                   const std::string& name) override;
  // The List object (items + metadata.resourceVersion of the last page), following `continue`
  // pages. `ns` empty on a namespaced resource lists all namespaces. A 410 while paging (the
  // continue token expired) is kOutOfRange: list again.
  [[nodiscard]] absl::StatusOr<nlohmann::json> List(
      const Resource& resource, const std::string& ns, const std::string& label_selector = "",
      const std::string& field_selector = "") override;
  // POST to the collection; the namespace is `ns`, else the object's metadata.namespace. Also
  // creates objects that are only ever created (TokenReview).
  [[nodiscard]] absl::StatusOr<nlohmann::json> Create(const Resource& resource,
                                                      const std::string& ns,
                                                      const nlohmann::json& object) override;
  // PUT of the object at metadata.name; with metadata.resourceVersion a stale object is kAborted.
  [[nodiscard]] absl::StatusOr<nlohmann::json> Update(const Resource& resource,
                                                      const std::string& ns,
                                                      const nlohmann::json& object) override;
  // PUT .../status.
  [[nodiscard]] absl::StatusOr<nlohmann::json> UpdateStatus(const Resource& resource,
                                                            const std::string& ns,
                                                            const nlohmann::json& object) override;
  [[nodiscard]] absl::StatusOr<nlohmann::json> Patch(const Resource& resource,
                                                     const std::string& ns, const std::string& name,
                                                     const nlohmann::json& patch,
                                                     PatchType type = PatchType::kMerge,
                                                     bool status_subresource = false) override;
  // With `uid_precondition`, deletes only that incarnation of the object (else kAborted).
  [[nodiscard]] absl::Status Delete(const Resource& resource, const std::string& ns,
                                    const std::string& name,
                                    const std::string& uid_precondition = "") override;

  // Streams a watch from `resource_version` (allowWatchBookmarks=true,
  // timeoutSeconds=timeout_seconds), reading the body line by line as it arrives. Calls
  // `on_event` for each event, on the calling thread, until the server ends the stream (OK),
  // `on_event` returns false (OK), *stop becomes true (checked at least every 0.5 s; kCancelled),
  // or an error: an ERROR event carrying a 410 Status, or a 410 answer, is kOutOfRange. On return
  // the connection is closed (or finished); nothing of the stream stays behind.
  [[nodiscard]] absl::Status Watch(const Resource& resource, const std::string& ns,
                                   const std::string& resource_version, int timeout_seconds,
                                   const std::function<bool(const WatchEvent&)>& on_event,
                                   const std::atomic<bool>* stop,
                                   const std::string& label_selector = "") override;

  const ClusterConfig& config() const;
  const HttpApiCounters& counters() const;

 private:
  struct Impl;
  explicit HttpApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnelmesh::kube
