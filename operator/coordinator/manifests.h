// Reads the standalone coordinator's manifests: a directory of YAML files holding `Mesh` objects
// (tunnelmesh.io/v1alpha1), the `Secret`s their join tokens live in, and `PeerPolicy` objects, in
// the same form that is applied to Kubernetes (parsed by operator/api/mesh.h and peer_policy.h).
// Other kinds are ignored. Every error names
// the file, the object and the field to fix.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "operator/api/mesh.h"

namespace tunnelmesh {

// Parses every *.yaml / *.yml file of `dir` (not recursive). Meshes whose Secret is missing or
// invalid are errors; so are duplicate names. PeerPolicies go to `policies` unless it is null: an
// invalid one, one naming a Mesh no manifest defines, or a second one of the same name is listed
// in `rejected` (the caller logs it) and the others still apply.
[[nodiscard]] absl::StatusOr<std::vector<MeshSpec>> LoadManifests(
    const std::string& dir, ManifestPolicies* policies = nullptr);

// A fingerprint of the directory's YAML files (names, sizes, modification times) to notice changes
// cheaply.
std::string ManifestFingerprint(const std::string& dir);

}  // namespace tunnelmesh
