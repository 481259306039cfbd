// Kubernetes API resources this project talks to, and the pure pieces of building requests for
// them (paths and query strings). No I/O here: client.cc sends what these functions build.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "operator/kube/object.h"

namespace tunnelmesh::kube {

// One REST resource: group "" is the core group (/api/v1), others live under /apis/GROUP/VERSION.
struct Resource {
  std::string group;
  std::string version;
  std::string plural;
  bool namespaced = false;
  std::string kind;

  // "v1" for the core group, "GROUP/VERSION" otherwise: the apiVersion of its objects.
  std::string ApiVersion() const;
};

extern const Resource kMeshes;        // tunnelmesh.io/v1alpha1, cluster-scoped
extern const Resource kMeshPeers;     // tunnelmesh.io/v1alpha1, cluster-scoped
extern const Resource kPeerPolicies;  // tunnelmesh.io/v1alpha1, cluster-scoped
extern const Resource kNodes;         // v1, cluster-scoped
extern const Resource kPods;          // v1 (a bound token's pod; the operator's own pod's label)
extern const Resource kNamespaces;    // v1, cluster-scoped (pods opting in to a mesh)
extern const Resource kSecrets;       // v1
extern const Resource kConfigMaps;    // v1
extern const Resource kEvents;        // v1
extern const Resource kLeases;        // coordination.k8s.io/v1
extern const Resource kTokenReviews;  // authentication.k8s.io/v1, cluster-scoped, create only

// One event of a watch stream (https://kubernetes.io/docs/reference/using-api/api-concepts/).
struct WatchEvent {
  std::string type;  // ADDED MODIFIED DELETED BOOKMARK ERROR
  nlohmann::json object;
};

enum class PatchType { kMerge, kJson, kStrategicMerge };

// The Content-Type of a PATCH body of `type`.
std::string_view PatchContentType(PatchType type);

// The path of a collection (`name` empty) or of one object, optionally of its `subresource`
// ("status"). `ns` is ignored for cluster-scoped resources; empty `ns` on a namespaced resource
// means all namespaces (only meaningful for list and watch).
std::string ResourcePath(const Resource& resource, std::string_view ns, std::string_view name,
                         std::string_view subresource = "");

// "?k1=v1&k2=v2" with values percent-encoded (RFC 3986 unreserved characters kept); pairs with
// an empty value are left out. Empty when nothing remains.
std::string QueryString(const std::vector<std::pair<std::string, std::string>>& params);

}  // namespace tunnelmesh::kube
