// The MeshPeer kind (tunnelmesh.io/v1alpha1, cluster-scoped) as C++: one object per mesh member
// (kind Node, Pod or External), its spec (mesh, public key, static endpoints), labels, and the
// addresses the coordinator allocated (status.meshIPs). Parsing checks what the CRD schema cannot
// (the key decodes, endpoints are IP:PORT) with errors that name the field.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "nlohmann/json.hpp"
#include "operator/api/pod_member.h"
#include "proto/coordinator.pb.h"

// proto/member_kind.h uses this alias without declaring it.
namespace tunnelmesh {
namespace coord = ::tunnelmesh::coordinator::v1;
}  // namespace tunnelmesh

#include "proto/member_kind.h"  // NOLINT(build/include_order)

namespace tunnelmesh {

struct MeshPeer {
  std::string name;
  std::map<std::string, std::string> labels;
  // spec
  std::string mesh;
  coord::MemberKind kind = coord::MEMBER_KIND_EXTERNAL;
  PublicKey public_key;
  std::vector<std::string> endpoints;  // static "IP:PORT" for members without an agent
  std::vector<std::string> aliases;    // more DNS labels, "<alias>.<mesh domain>"
  // Kind Pod: the pod and its host (spec.pod); public_key is then the pod's identifier
  // (PodMemberId), not a key anyone holds.
  std::optional<PodIdentity> pod;
  // Exit peers (docs/remote-access.md): spec.exitPeer, and spec.useExitPeer (member names, most
  // preferred first).
  bool exit_peer = false;
  std::vector<std::string> use_exit_peers;
  // spec.sshPublicKey (the agent's Ed25519 SSH key, base64; zero: none) and spec.sshPort.
  PublicKey ssh_key;
  uint16_t ssh_port = 0;
  // status.meshIPs; unparsable entries are dropped (the coordinator allocates anew).
  std::vector<IpAddress> mesh_ips;

  bool operator==(const MeshPeer&) const = default;
};

// The most exit peers one member may list (spec.useExitPeer, `join --exit-peer`).
inline constexpr size_t kMaxExitPeers = 8;

// Checks a list of exit peer names; the error names `field` and the entry.
[[nodiscard]] absl::Status CheckExitPeerNames(const std::vector<std::string>& names,
                                              const std::string& field);

// Parses a MeshPeer object (from the cluster: any shape).
[[nodiscard]] absl::StatusOr<MeshPeer> ParseMeshPeer(const nlohmann::json& object);

// The object for `peer`: apiVersion, kind, metadata (name, labels) and spec; no status.
nlohmann::json MeshPeerObject(const MeshPeer& peer);

// status.meshIPs as the object carries them.
nlohmann::json MeshIpsJson(const std::vector<IpAddress>& ips);

}  // namespace tunnelmesh
