// The fields each manifest kind may hold (Mesh, PeerPolicy, the Secret of a join token), and the
// check that refuses any other: a misspelt field is an error naming its path and the closest known
// field, never silently ignored. The spec fields here are the ones the CRD schemas in crds/ declare
// (known_fields_test.cc reads the schemas and compares). No I/O; thread-compatible.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

// One known field. With `fields`, its value is an object (or with `list`, a list of objects)
// whose keys are checked in turn; without, its value is not looked into here (a scalar, a list of
// scalars, or a free-form map such as labels or a Secret's data).
struct KnownField {
  std::string_view name;
  std::span<const KnownField> fields = {};
  bool list = false;
};

// The top-level fields of each kind read from manifests (apiVersion, kind, metadata with what
// Kubernetes puts there, spec or the Secret's fields, status).
[[nodiscard]] std::span<const KnownField> MeshObjectFields();
[[nodiscard]] std::span<const KnownField> PeerPolicyObjectFields();
[[nodiscard]] std::span<const KnownField> SecretObjectFields();

// kInvalidArgument for the first key of `object` (in key order), at any depth, that `fields` does
// not know: "unknown field spec.ipv6CIRD (did you mean spec.ipv6CIDR?)". `path` is the object's
// own path ("" for a whole object). Values of the wrong type are left to the parser, which names
// the type it wants.
[[nodiscard]] absl::Status CheckKnownFields(const nlohmann::json& object,
                                            std::span<const KnownField> fields,
                                            const std::string& path = "");

// Every path `fields` knows, as "spec.dns.ttlSeconds" and "spec.from[].ipBlock.cidr" (a list's
// items marked "[]"), parents before their children.
[[nodiscard]] std::vector<std::string> KnownFieldPaths(std::span<const KnownField> fields,
                                                       const std::string& path = "");

// The known name closest to `name` (case-insensitive edit distance, a swap of two neighbours
// counting one), or "" when none is close enough to be a likely typo.
[[nodiscard]] std::string_view ClosestField(std::string_view name,
                                            std::span<const KnownField> fields);

}  // namespace tunnelmesh
