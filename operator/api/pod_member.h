// Pods as members (issue: the CNI plugin, docs/pods.md): what the coordinator keeps of a pod that a
// member hosts, how it names it, and the identifier that stands in for its public key. A pod has
// no key and no WireGuard peer of its own: its host's tunnel carries its traffic.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

struct PodIdentity {
  PublicKey host;               // The member whose tunnel carries the pod.
  std::string namespace_name;   // Kubernetes namespace ("default" outside Kubernetes).
  std::string pod_name;         // Pod name (outside Kubernetes: from the container).
  std::string uid;              // Pod metadata.uid, or the runtime's container ID.
  std::map<std::string, std::string> namespace_labels;  // For PeerPolicy namespaceSelector.

  bool operator==(const PodIdentity&) const = default;
};

// The identifier a pod member is keyed by where members are keyed by public keys: BLAKE2s over a
// fixed context, the host's key, the namespace, the name and the uid. Stable across restarts of
// either side; a new incarnation of a pod (new uid) or the same name on another host gets another.
PublicKey PodMemberId(const PodIdentity& pod);

// "<pod>.<namespace>.pod": the member (and MeshPeer) name; its DNS name is that under the mesh
// domain.
std::string PodMemberName(const std::string& namespace_name, const std::string& pod_name);

// Checks a pod's namespace (a DNS label), name (a DNS subdomain, and the member name at most 253
// characters) and uid (1 to 128 characters of letters, digits, '-' and '_'). Errors name the field.
[[nodiscard]] absl::Status CheckPodRef(const std::string& namespace_name,
                                       const std::string& pod_name, const std::string& uid);

// {"host", "namespace", "name", "uid", "namespaceLabels"}: in members.json and a MeshPeer's
// spec.pod. Decode errors name the field under `where`.
nlohmann::json PodIdentityJson(const PodIdentity& pod);
[[nodiscard]] absl::StatusOr<PodIdentity> ParsePodIdentity(const nlohmann::json& json,
                                                           const std::string& where);

}  // namespace tunnelmesh
