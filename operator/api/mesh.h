// The Mesh kind (tunnelmesh.io/v1alpha1, cluster-scoped) as C++: its spec, and the parsing and
// validation shared by the Kubernetes reconciler (the object's JSON, which is YAML) and the
// standalone manifests (YAML files, operator/coordinator/manifests.h), together with the Secret
// its join token lives in. Every error names the source, the object and the field to fix.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"
#include "operator/api/peer_policy.h"

namespace tunnelmesh {

// The largest spec.joinTokenMaxMembers (as the CRD's schema allows).
inline constexpr uint32_t kMaxJoinTokenMembers = 1000000;

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
  // spec.dns: the time to live of answers, and of negative answers (the SOA minimum).
  uint32_t dns_ttl_seconds = 5;
  uint32_t dns_negative_ttl_seconds = 5;
  SecretRef join_token_ref;
  // spec.presharedKeyGeneration: raising it rolls the mesh's WireGuard preshared key over to a
  // fresh random key (docs/protocol.md, "Preshared key"). The key itself is never in the spec.
  uint64_t preshared_key_generation = 0;
  // spec.joinTokenMaxMembers: while the mesh has this many members, the join token admits no new
  // one (members already in the mesh, and ServiceAccount-token joins, are not limited by it).
  // 0: no cap.
  uint32_t join_token_max_members = 0;
  // Resolved from the referenced Secret.
  std::string join_token;
  // Where the object came from, for messages.
  std::string source;

  bool operator==(const MeshSpec&) const = default;
};

// PeerPolicies found in manifests. An invalid policy does not stop the others (as in the cluster,
// where each object has its own status): it is listed in `rejected` with the file, its name and
// the field to fix.
struct ManifestPolicies {
  std::vector<PeerPolicySpec> accepted;
  std::vector<std::string> rejected;
};

// Parses YAML documents; `file` appears in messages. Secrets go to `secrets` ("namespace/name" ->
// key -> value), Meshes to `meshes`, PeerPolicies to `policies` (skipped when null). Other kinds
// and fields a kind lacks (known_fields.h) are errors naming the file, object and field's path.
[[nodiscard]] absl::Status ParseManifestText(
    const std::string& text, const std::string& file, std::vector<MeshSpec>* meshes,
    std::map<std::string, std::map<std::string, std::string>>* secrets,
    ManifestPolicies* policies = nullptr);

// A YAML document as JSON, the shape Kubernetes gives the same object: plain scalars that read
// as integers, booleans or null become those; quoted scalars stay strings. Nesting deeper than 64
// levels is an error.
[[nodiscard]] absl::StatusOr<nlohmann::json> YamlTextToJson(const std::string& text);

// Takes the mesh's join token from its Secret's `values` (key -> decoded value); the error names
// the Secret and the key to set.
[[nodiscard]] absl::Status SetJoinToken(MeshSpec* mesh,
                                        const std::map<std::string, std::string>& values);

}  // namespace tunnelmesh
