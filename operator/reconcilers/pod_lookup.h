// How the coordinator learns the truth about a pod a node asks to attach (Coordinator::Options::
// lookup_pod): the Pod and its Namespace from the API server. The operator's ClusterRole grants
// get on pods and namespaces for this (charts/tunnelmesh, docs/helm.md).
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "operator/coordinator/coordinator.h"
#include "operator/kube/api.h"

namespace tunnelmesh {

// The facts of a Pod object and its Namespace object (either may come in any shape: missing
// fields read as empty). A malformed Pod is an error naming the field.
[[nodiscard]] absl::StatusOr<PodFacts> PodFactsFrom(const nlohmann::json& pod,
                                                    const nlohmann::json& namespace_object);

// Options::lookup_pod over `api` (two GETs, no cache: attaches are rare next to what else a
// pod start costs). `api` must outlive the coordinator.
std::function<absl::StatusOr<PodFacts>(const std::string&, const std::string&)> PodLookup(
    kube::Api* api);

}  // namespace tunnelmesh
