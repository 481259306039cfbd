// Reads the standalone coordinator's manifests: a directory of YAML files holding `Mesh` objects
// (tunnelmesh.io/v1alpha1) and the `Secret`s their join tokens live in, in the same form that is
// applied to Kubernetes. Other kinds are ignored (PeerPolicy is compiled by a later component).
// Every error names the file, the object and the field to fix.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

struct SecretRef {
  std::string namespace_name;
  std::string name;
  std::string key = "token";

  bool operator==(const SecretRef&) const = default;
};

struct MeshSpec {
  std::string name;
  Prefix ipv4_cidr;
  std::optional<Prefix> ipv6_cidr;
  std::string domain = "mesh";
  std::string default_action = "Deny";
  SecretRef join_token_ref;
  // Resolved from the referenced Secret.
  std::string join_token;
  // Where the object came from, for messages.
  std::string source;

  bool operator==(const MeshSpec&) const = default;
};

// Parses every *.yaml / *.yml file of `dir` (not recursive). Meshes whose Secret is missing or
// invalid are errors; so are duplicate names.
absl::StatusOr<std::vector<MeshSpec>> LoadManifests(const std::string& dir);

// Parses the text of one or more YAML documents (for tests); `file` appears in messages. Secrets
// found are added to `secrets` ("namespace/name" -> key -> value), meshes to `meshes`.
absl::Status ParseManifestText(const std::string& text, const std::string& file,
                               std::vector<MeshSpec>* meshes,
                               std::map<std::string, std::map<std::string, std::string>>* secrets);

// Takes the mesh's join token from its Secret's `values` (key -> decoded value); the error names
// the Secret and the key to set.
absl::Status SetJoinToken(MeshSpec* mesh, const std::map<std::string, std::string>& values);

// A fingerprint of the directory's YAML files (names, sizes, modification times) to notice changes
// cheaply.
std::string ManifestFingerprint(const std::string& dir);

}  // namespace tunnelmesh
