#include "operator/reconcilers/pod_lookup.h"

#include "operator/kube/object.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {
namespace {

using kube::Field;

std::map<std::string, std::string> StringMap(const nlohmann::json& object) {
  std::map<std::string, std::string> out;
  if (!object.is_object()) return out;
  for (const auto& [k, v] : object.items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

}  // namespace

absl::StatusOr<PodFacts> PodFactsFrom(const nlohmann::json& pod,
                                      const nlohmann::json& namespace_object) {
  if (!pod.is_object()) return absl::InvalidArgumentError("the Pod is not an object");
  const nlohmann::json& metadata = Field(pod, "metadata");
  PodFacts facts;
  facts.uid = kube::StringAt(metadata, "uid");
  if (facts.uid.empty()) return absl::InvalidArgumentError("the Pod has no metadata.uid");
  facts.node = kube::StringAt(Field(pod, "spec"), "nodeName");
  facts.labels = StringMap(Field(metadata, "labels"));
  const nlohmann::json& ns_metadata = Field(namespace_object, "metadata");
  facts.namespace_labels = StringMap(Field(ns_metadata, "labels"));
  // Clusters before 1.21 do not set it; the policy engine relies on it.
  const std::string ns_name = kube::StringAt(metadata, "namespace");
  if (!ns_name.empty()) facts.namespace_labels.emplace("kubernetes.io/metadata.name", ns_name);
  facts.mesh_annotation = kube::StringAt(Field(metadata, "annotations"), kPodMeshAnnotation);
  if (facts.mesh_annotation.empty()) {
    facts.mesh_annotation = kube::StringAt(Field(ns_metadata, "annotations"), kPodMeshAnnotation);
  }
  return facts;
}

std::function<absl::StatusOr<PodFacts>(const std::string&, const std::string&)> PodLookup(
    kube::Api* api) {
  return [api](const std::string& namespace_name,
               const std::string& pod_name) -> absl::StatusOr<PodFacts> {
    absl::StatusOr<nlohmann::json> pod = api->Get(kube::kPods, namespace_name, pod_name);
    if (!pod.ok()) return pod.status();
    absl::StatusOr<nlohmann::json> ns = api->Get(kube::kNamespaces, "", namespace_name);
    if (!ns.ok()) return ns.status();
    return PodFactsFrom(*pod, *ns);
  };
}

}  // namespace tunnelmesh
