// The one mapping between member kinds as people write them ("Node", "Pod", "External": flags,
// MeshPeer spec.kind, members.json) and the coordinator API's enum. Every component converts
// through these two functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

// At most this many DNS aliases per member (MeshPeer spec.aliases, `join --alias`): the CRD's
// maxItems, checked by the agent and the coordinator alike.
inline constexpr size_t kMaxAliases = 16;

// nullopt for anything but the three names (case-sensitive, as in the CRD's enum).
inline std::optional<coord::MemberKind> MemberKindFromName(std::string_view name) {
  if (name == "Node") return coord::MEMBER_KIND_NODE;
  if (name == "Pod") return coord::MEMBER_KIND_POD;
  if (name == "External") return coord::MEMBER_KIND_EXTERNAL;
  return std::nullopt;
}

// A member registered without a kind is External.
inline std::string MemberKindName(coord::MemberKind kind) {
  switch (kind) {
    case coord::MEMBER_KIND_NODE:
      return "Node";
    case coord::MEMBER_KIND_POD:
      return "Pod";
    default:
      return "External";
  }
}

}  // namespace tunnelmesh
