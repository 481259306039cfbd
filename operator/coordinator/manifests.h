// Reads the standalone coordinator's manifests: a directory of YAML files holding `Mesh` objects
// (tunnelmesh.io/v1alpha1), the `Secret`s their join tokens live in, and `PeerPolicy` objects, in
// the same form that is applied to Kubernetes (parsed by operator/api/mesh.h and peer_policy.h).
// A document of another kind, or a field these kinds do not have, is an error (known_fields.h).
// Every error names the file, the object and the field to fix.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "operator/api/mesh.h"

namespace tunnelmesh {

// Parses every *.yaml / *.yml file of `dir` (not recursive). Meshes whose Secret is missing or
// invalid are errors (kInvalidArgument); so are duplicate names. A directory or file that cannot be
// read (e.g. no descriptor left, EMFILE) is kUnavailable, never an empty set: the caller keeps what
// it has and tries again. PeerPolicies go to `policies` unless it is null: an
// invalid one, one naming a Mesh no manifest defines, or a second one of the same name is listed
// in `rejected` (the caller logs it) and the others still apply.
[[nodiscard]] absl::StatusOr<std::vector<MeshSpec>> LoadManifests(
    const std::string& dir, ManifestPolicies* policies = nullptr);

// A fingerprint of the directory's YAML files (names, sizes, modification times) to notice changes
// cheaply. kUnavailable when the directory cannot be listed.
[[nodiscard]] absl::StatusOr<std::string> ManifestFingerprint(const std::string& dir);

// The standalone reload loop's view of the manifest directory (main.cc polls it a few times a
// second). A change is returned only when the directory was read completely and parsed: a read
// error (kUnavailable: the directory or a file cannot be read, e.g. while descriptors are
// exhausted) or an invalid manifest is logged, the caller keeps its current Meshes, and a read
// error is retried at the next poll (an invalid manifest waits for the next edit). An empty
// directory read fine is a real change (every Mesh removed), returned and logged at warning.
// Not thread-safe: one thread polls.
class ManifestWatcher {
 public:
  struct Change {
    std::vector<MeshSpec> meshes;
    ManifestPolicies policies;
  };
  // `fingerprint`: the state already applied (ManifestFingerprint at the initial load).
  ManifestWatcher(std::string dir, std::string fingerprint);
  // The new manifests when the directory changed since the last change returned; nullopt when it
  // did not, or when it could not be read or parsed (logged once per distinct error).
  std::optional<Change> Poll();
  // Read errors seen so far (each failed poll counts).
  uint64_t read_errors() const { return read_errors_; }

 private:
  // Logs `status` unless it repeats the previous error.
  void LogError(const absl::Status& status);

  const std::string dir_;
  std::string fingerprint_;
  std::string last_error_;
  uint64_t read_errors_ = 0;
};

}  // namespace tunnelmesh
