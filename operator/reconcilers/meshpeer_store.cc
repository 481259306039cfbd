#include "operator/reconcilers/meshpeer_store.h"

#include "lib/base/log.h"
#include "lib/net/ip.h"
#include "operator/kube/api_status.h"
#include "operator/kube/resource.h"
#include "operator/reconcilers/status_writer.h"
#include "proto/member_kind.h"

namespace tunnelmesh {

absl::StatusOr<MemberRecord> MeshPeerToRecord(const nlohmann::json& object) {
  MemberRecord record;
  if (!object.is_object()) return absl::InvalidArgumentError("a MeshPeer must be an object");
  const nlohmann::json& metadata = Field(object, "metadata");
  const nlohmann::json& spec = Field(object, "spec");
  const nlohmann::json& status = Field(object, "status");
  if (!metadata.is_object() || !spec.is_object() || !(status.is_object() || status.is_null())) {
    return absl::InvalidArgumentError("metadata, spec and status must be objects");
  }
  record.name = ObjectName(object);
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
  record.public_key = *parsed;
  record.mesh = kube::StringAt(spec, "mesh");
  std::optional<coord::MemberKind> kind = MemberKindFromName(kube::StringAt(spec, "kind"));
  if (!kind) return absl::InvalidArgumentError("spec.kind must be Node, Pod or External");
  record.kind = *kind;
  const nlohmann::json& labels = Field(metadata, "labels");
  if (labels.is_object()) {
    for (const auto& [k, v] : labels.items()) {
      if (v.is_string()) record.labels[k] = v.get<std::string>();
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
      record.static_endpoints.push_back(e.get<std::string>());
    }
  }
  const nlohmann::json& ips = Field(status, "meshIPs");
  if (ips.is_array()) {
    for (const nlohmann::json& ip : ips) {
      if (!ip.is_string()) continue;
      absl::StatusOr<IpAddress> address = IpAddress::Parse(ip.get<std::string>());
      if (address.ok()) record.mesh_ips.push_back(*address);
    }
  }
  return record;
}

nlohmann::json MeshPeerFor(const MemberRecord& record) {
  nlohmann::json object = {{"apiVersion", kube::kMeshPeers.ApiVersion()},
                           {"kind", "MeshPeer"},
                           {"metadata", {{"name", record.name}}},
                           {"spec",
                            {{"mesh", record.mesh},
                             {"kind", MemberKindName(record.kind)},
                             {"publicKey", record.public_key.ToBase64()}}}};
  object["metadata"]["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : record.labels) object["metadata"]["labels"][k] = v;
  if (!record.static_endpoints.empty()) object["spec"]["endpoints"] = record.static_endpoints;
  return object;
}

absl::Status KubeMemberStore::WriteObject(const MemberRecord& record) {
  nlohmann::json desired = MeshPeerFor(record);
  absl::StatusOr<nlohmann::json> created = client_->Create(kube::kMeshPeers, "", desired);
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) return created.status();
  if (!created.ok()) {
    absl::StatusOr<nlohmann::json> existing = client_->Get(kube::kMeshPeers, "", record.name);
    if (!existing.ok()) return existing.status();
    const std::string theirs = kube::StringAt(Field(*existing, "spec"), "publicKey");
    if (!theirs.empty() && theirs != record.public_key.ToBase64()) {
      return absl::AlreadyExistsError("MeshPeer " + record.name +
                                      " belongs to another public key");
    }
    // A merge patch: labels we no longer have are set to null to remove them.
    nlohmann::json patch = {{"metadata", {{"labels", desired["metadata"]["labels"]}}},
                            {"spec", desired["spec"]}};
    const nlohmann::json& labels = Field(Field(*existing, "metadata"), "labels");
    if (labels.is_object()) {
      for (const auto& [k, v] : labels.items()) {
        if (!record.labels.count(k)) patch["metadata"]["labels"][k] = nullptr;
      }
    }
    if (record.static_endpoints.empty()) patch["spec"]["endpoints"] = nullptr;
    absl::StatusOr<nlohmann::json> patched =
        client_->Patch(kube::kMeshPeers, "", record.name, patch);
    if (!patched.ok()) return patched.status();
  }
  nlohmann::json ips = nlohmann::json::array();
  for (const IpAddress& ip : record.mesh_ips) ips.push_back(ip.ToString());
  absl::StatusOr<nlohmann::json> status =
      client_->Patch(kube::kMeshPeers, "", record.name, {{"status", {{"meshIPs", ips}}}},
                     kube::PatchType::kMerge, /*status_subresource=*/true);
  return status.status();
}

absl::Status KubeMemberStore::Put(const MemberRecord& record) {
  auto old = members_.find(record.public_key);
  if (old != members_.end() && old->second.name != record.name) {
    absl::Status s = client_->Delete(kube::kMeshPeers, "", old->second.name);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
  }
  if (absl::Status s = WriteObject(record); !s.ok()) {
    return absl::Status(s.code(), "MeshPeer " + record.name + ": " + std::string(s.message()));
  }
  members_[record.public_key] = record;
  return absl::OkStatus();
}

absl::Status KubeMemberStore::Remove(const PublicKey& key) {
  auto it = members_.find(key);
  if (it == members_.end()) return absl::OkStatus();
  absl::Status s = client_->Delete(kube::kMeshPeers, "", it->second.name);
  if (!s.ok() && !absl::IsNotFound(s)) return s;
  members_.erase(it);
  return absl::OkStatus();
}

void KubeMemberStore::Observe(const PublicKey& key, const MemberRecord* record) {
  if (record == nullptr) {
    members_.erase(key);
  } else {
    members_[key] = *record;
  }
}

}  // namespace tunnelmesh
