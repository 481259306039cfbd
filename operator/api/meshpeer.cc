#include "operator/api/meshpeer.h"

#include "lib/dns/message.h"
#include "operator/api/mesh.h"
#include "operator/kube/object.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {

using kube::Field;

absl::Status CheckExitPeerNames(const std::vector<std::string>& names, const std::string& field) {
  if (names.size() > kMaxExitPeers) {
    return absl::InvalidArgumentError(field + ": at most " + std::to_string(kMaxExitPeers) +
                                      " exit peers");
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (!dns::IsDnsLabel(names[i])) {
      return absl::InvalidArgumentError(field + ": \"" + names[i] +
                                        "\" is not a member name (lowercase letters, digits and "
                                        "'-', e.g. home-exit)");
    }
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) {
        return absl::InvalidArgumentError(field + ": \"" + names[i] + "\" is listed twice");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<MeshPeer> ParseMeshPeer(const nlohmann::json& object) {
  if (!object.is_object()) return absl::InvalidArgumentError("a MeshPeer must be an object");
  const nlohmann::json& metadata = Field(object, "metadata");
  const nlohmann::json& spec = Field(object, "spec");
  const nlohmann::json& status = Field(object, "status");
  if (!metadata.is_object() || !spec.is_object() || !(status.is_object() || status.is_null())) {
    return absl::InvalidArgumentError("metadata, spec and status must be objects");
  }
  MeshPeer peer;
  peer.name = kube::ObjectName(object);
  const nlohmann::json& key = Field(spec, "publicKey");
  if (!key.is_string() || key.get<std::string>().empty()) {
    return absl::InvalidArgumentError(
        "spec.publicKey is missing: set it to the member's WireGuard public key (base64, from "
        "`tunnelmesh-agent pubkey` or `wg pubkey`)");
  }
  absl::StatusOr<PublicKey> parsed = PublicKey::FromBase64(key.get<std::string>());
  if (!parsed.ok() || parsed->IsZero()) {
    return absl::InvalidArgumentError("spec.publicKey is not a base64 WireGuard public key");
  }
  peer.public_key = *parsed;
  peer.mesh = kube::StringAt(spec, "mesh");
  std::optional<coord::MemberKind> kind = MemberKindFromName(kube::StringAt(spec, "kind"));
  if (!kind) return absl::InvalidArgumentError("spec.kind must be Node, Pod or External");
  peer.kind = *kind;
  const nlohmann::json& labels = Field(metadata, "labels");
  if (labels.is_object()) {
    for (const auto& [k, v] : labels.items()) {
      if (v.is_string()) peer.labels[k] = v.get<std::string>();
    }
  }
  const nlohmann::json& endpoints = Field(spec, "endpoints");
  if (endpoints.is_array()) {
    for (const nlohmann::json& e : endpoints) {
      if (!e.is_string() || !Endpoint::Parse(e.get<std::string>()).ok()) {
        const std::string text =
            e.is_string() ? e.get<std::string>()
                          : e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return absl::InvalidArgumentError("spec.endpoints: \"" + text +
                                          "\" is not IP:PORT (e.g. 192.0.2.10:51820 or "
                                          "[2001:db8::1]:51820)");
      }
      peer.endpoints.push_back(e.get<std::string>());
    }
  }
  const nlohmann::json& aliases = Field(spec, "aliases");
  if (aliases.is_array()) {
    if (aliases.size() > kMaxAliases) {
      return absl::InvalidArgumentError("spec.aliases: at most " + std::to_string(kMaxAliases) +
                                        " aliases");
    }
    for (const nlohmann::json& a : aliases) {
      if (!a.is_string() || !dns::IsDnsLabel(a.get<std::string>())) {
        const std::string text =
            a.is_string() ? a.get<std::string>()
                          : a.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return absl::InvalidArgumentError("spec.aliases: \"" + text +
                                          "\" is not a DNS label (lowercase letters, digits "
                                          "and '-', e.g. git)");
      }
      peer.aliases.push_back(a.get<std::string>());
    }
  }
  if (const nlohmann::json& pod = Field(spec, "pod"); !pod.is_null()) {
    absl::StatusOr<PodIdentity> parsed_pod = ParsePodIdentity(pod, "spec.pod");
    if (!parsed_pod.ok()) return parsed_pod.status();
    if (PodMemberId(*parsed_pod) != peer.public_key) {
      return absl::InvalidArgumentError(
          "spec.publicKey of a pod member must be the identifier its coordinator derived from "
          "spec.pod; pod members are made by the coordinator, not by hand");
    }
    peer.pod = *std::move(parsed_pod);
  }
  if (const nlohmann::json& exit = Field(spec, "exitPeer"); !exit.is_null()) {
    if (!exit.is_boolean())
      return absl::InvalidArgumentError("spec.exitPeer must be true or false");
    peer.exit_peer = exit.get<bool>();
  }
  if (const nlohmann::json& use = Field(spec, "useExitPeer"); !use.is_null()) {
    // One name is a list of one (standalone manifests; the CRD takes lists only).
    const nlohmann::json list = use.is_string() ? nlohmann::json::array({use}) : use;
    if (!list.is_array()) {
      return absl::InvalidArgumentError(
          "spec.useExitPeer must be a list of member names, most preferred first (e.g. "
          "[home-exit])");
    }
    for (const nlohmann::json& name : list) {
      peer.use_exit_peers.push_back(name.is_string() ? name.get<std::string>() : std::string());
    }
    if (absl::Status s = CheckExitPeerNames(peer.use_exit_peers, "spec.useExitPeer"); !s.ok()) {
      return s;
    }
  }
  if (const std::string ssh = kube::StringAt(spec, "sshPublicKey"); !ssh.empty()) {
    absl::StatusOr<PublicKey> ssh_key = PublicKey::FromBase64(ssh);
    if (!ssh_key.ok()) {
      return absl::InvalidArgumentError("spec.sshPublicKey is not a base64 Ed25519 public key");
    }
    peer.ssh_key = *ssh_key;
    const nlohmann::json& port = Field(spec, "sshPort");
    if (!port.is_number_unsigned() || port.get<uint64_t>() == 0 || port.get<uint64_t>() > 65535) {
      return absl::InvalidArgumentError("spec.sshPort must be a TCP port (1-65535)");
    }
    peer.ssh_port = static_cast<uint16_t>(port.get<uint64_t>());
  }
  const nlohmann::json& ips = Field(status, "meshIPs");
  if (ips.is_array()) {
    for (const nlohmann::json& ip : ips) {
      if (!ip.is_string()) continue;
      absl::StatusOr<IpAddress> address = IpAddress::Parse(ip.get<std::string>());
      if (address.ok()) peer.mesh_ips.push_back(*address);
    }
  }
  return peer;
}

nlohmann::json MeshPeerObject(const MeshPeer& peer) {
  nlohmann::json object = {{"apiVersion", kube::kMeshPeers.ApiVersion()},
                           {"kind", "MeshPeer"},
                           {"metadata", {{"name", peer.name}}},
                           {"spec",
                            {{"mesh", peer.mesh},
                             {"kind", MemberKindName(peer.kind)},
                             {"publicKey", peer.public_key.ToBase64()}}}};
  object["metadata"]["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : peer.labels) object["metadata"]["labels"][k] = v;
  if (!peer.endpoints.empty()) object["spec"]["endpoints"] = peer.endpoints;
  if (!peer.aliases.empty()) object["spec"]["aliases"] = peer.aliases;
  if (peer.pod) object["spec"]["pod"] = PodIdentityJson(*peer.pod);
  if (peer.exit_peer) object["spec"]["exitPeer"] = true;
  if (!peer.use_exit_peers.empty()) object["spec"]["useExitPeer"] = peer.use_exit_peers;
  if (!peer.ssh_key.IsZero()) {
    object["spec"]["sshPublicKey"] = peer.ssh_key.ToBase64();
    object["spec"]["sshPort"] = peer.ssh_port;
  }
  return object;
}

nlohmann::json MeshIpsJson(const std::vector<IpAddress>& ips) {
  nlohmann::json out = nlohmann::json::array();
  for (const IpAddress& ip : ips) out.push_back(ip.ToString());
  return out;
}

}  // namespace tunnelmesh
