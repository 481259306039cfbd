#include "operator/store/meshpeer_store.h"

#include "absl/strings/escaping.h"
#include "lib/base/log.h"
#include "lib/net/ip.h"
#include "operator/kube/api_status.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {

using kube::Field;

absl::StatusOr<MemberRecord> MeshPeerToRecord(const nlohmann::json& object) {
  absl::StatusOr<MeshPeer> peer = ParseMeshPeer(object);
  if (!peer.ok()) return peer.status();
  MemberRecord record;
  record.public_key = peer->public_key;
  record.mesh = peer->mesh;
  record.name = peer->name;
  record.mesh_ips = peer->mesh_ips;
  record.labels = peer->labels;
  record.kind = static_cast<decltype(record.kind)>(peer->kind);
  record.static_endpoints = peer->endpoints;
  record.aliases = peer->aliases;
  record.pod = peer->pod;
  record.exit_peer = peer->exit_peer;
  record.use_exit_peers = peer->use_exit_peers;
  record.ssh_key = peer->ssh_key;
  record.ssh_port = peer->ssh_port;
  return record;
}

nlohmann::json MeshPeerFor(const MemberRecord& record) {
  MeshPeer peer;
  peer.name = record.name;
  peer.labels = record.labels;
  peer.mesh = record.mesh;
  peer.kind = static_cast<coord::MemberKind>(record.kind);
  peer.public_key = record.public_key;
  peer.endpoints = record.static_endpoints;
  peer.aliases = record.aliases;
  peer.pod = record.pod;
  peer.exit_peer = record.exit_peer;
  peer.use_exit_peers = record.use_exit_peers;
  peer.ssh_key = record.ssh_key;
  peer.ssh_port = record.ssh_port;
  return MeshPeerObject(peer);
}

absl::Status KubeMemberStore::WriteObject(const MemberRecord& record, bool create) {
  nlohmann::json desired = MeshPeerFor(record);
  bool exists = true;
  if (create) {
    absl::StatusOr<nlohmann::json> created = client_->Create(kube::kMeshPeers, "", desired);
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) return created.status();
    exists = !created.ok();
  }
  if (exists) {
    // Without `create` a missing object is NOT_FOUND here or at the patches below (a merge patch
    // never creates), whenever the delete lands.
    absl::StatusOr<nlohmann::json> existing = client_->Get(kube::kMeshPeers, "", record.name);
    if (!existing.ok()) return existing.status();
    const std::string theirs = kube::StringAt(Field(*existing, "spec"), "publicKey");
    if (!theirs.empty() && theirs != record.public_key.ToBase64()) {
      return absl::AlreadyExistsError("MeshPeer " + record.name + " belongs to another public key");
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
    if (record.aliases.empty()) patch["spec"]["aliases"] = nullptr;
    if (!record.exit_peer) patch["spec"]["exitPeer"] = nullptr;
    if (record.use_exit_peers.empty()) patch["spec"]["useExitPeer"] = nullptr;
    if (record.ssh_key.IsZero()) {
      patch["spec"]["sshPublicKey"] = nullptr;
      patch["spec"]["sshPort"] = nullptr;
    }
    absl::StatusOr<nlohmann::json> patched =
        client_->Patch(kube::kMeshPeers, "", record.name, patch);
    if (!patched.ok()) return patched.status();
  }
  absl::StatusOr<nlohmann::json> status = client_->Patch(
      kube::kMeshPeers, "", record.name, {{"status", {{"meshIPs", MeshIpsJson(record.mesh_ips)}}}},
      kube::PatchType::kMerge, /*status_subresource=*/true);
  return status.status();
}

absl::Status KubeMemberStore::Write(const MemberRecord& record, bool create) {
  auto old = members_.find(record.public_key);
  if (old != members_.end() && old->second.name != record.name) {
    // Renamed: the old object goes and one under the new name is created. An update whose old
    // object is already gone was deleted by someone else: it stays deleted.
    absl::Status s = client_->Delete(kube::kMeshPeers, "", old->second.name);
    if (absl::IsNotFound(s) && !create) {
      return absl::NotFoundError("MeshPeer " + old->second.name +
                                 " was deleted since the coordinator admitted it; not created "
                                 "again (the member registers anew once it is evicted)");
    }
    if (!s.ok() && !absl::IsNotFound(s)) return s;
    create = true;
  }
  if (absl::Status s = WriteObject(record, create); !s.ok()) {
    if (absl::IsNotFound(s) && !create) {
      return absl::NotFoundError("MeshPeer " + record.name +
                                 " was deleted since the coordinator admitted it; not created "
                                 "again (the member registers anew once it is evicted): " +
                                 std::string(s.message()));
    }
    return absl::Status(s.code(), "MeshPeer " + record.name + ": " + std::string(s.message()));
  }
  members_[record.public_key] = record;
  return absl::OkStatus();
}

absl::Status KubeMemberStore::Put(const MemberRecord& record) {
  return Write(record, /*create=*/true);
}

absl::Status KubeMemberStore::Update(const MemberRecord& record) {
  return Write(record, /*create=*/false);
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

absl::Status KubeMemberStore::LoadQuarantine() {
  if (secret_.name.empty()) return absl::OkStatus();
  const std::string where = "Secret " + secret_.ns + "/" + secret_.name + " data." + kQuarantineKey;
  absl::StatusOr<nlohmann::json> secret = client_->Get(kube::kSecrets, secret_.ns, secret_.name);
  if (absl::IsNotFound(secret.status())) return absl::OkStatus();  // First start.
  if (!secret.ok()) {
    return absl::Status(secret.status().code(),
                        "reading " + where + ": " + std::string(secret.status().message()));
  }
  const nlohmann::json data = secret->value("data", nlohmann::json::object());
  auto value = data.find(kQuarantineKey);
  if (value == data.end() || !value->is_string()) return absl::OkStatus();
  std::string text;
  if (!absl::Base64Unescape(value->get<std::string>(), &text)) {
    return absl::DataLossError(where +
                               " is not base64; restore it from a backup, or remove the entry to "
                               "forget which addresses and names of departed members are "
                               "quarantined");
  }
  absl::StatusOr<std::vector<QuarantineEntry>> entries = DecodeQuarantine(text, where, absl::Now());
  if (!entries.ok()) return entries.status();
  quarantine_ = *std::move(entries);
  return absl::OkStatus();
}

absl::Status KubeMemberStore::SaveQuarantine(const std::vector<QuarantineEntry>& entries) {
  if (secret_.name.empty()) return absl::OkStatus();
  const std::string where = "Secret " + secret_.ns + "/" + secret_.name;
  absl::StatusOr<nlohmann::json> secret = client_->Get(kube::kSecrets, secret_.ns, secret_.name);
  if (!secret.ok()) {
    return absl::Status(secret.status().code(),
                        "reading " + where + ": " + std::string(secret.status().message()));
  }
  nlohmann::json object = *std::move(secret);
  if (!object.contains("data") || !object["data"].is_object()) {
    object["data"] = nlohmann::json::object();
  }
  object["data"][kQuarantineKey] = absl::Base64Escape(EncodeQuarantine(entries, absl::Now()));
  absl::StatusOr<nlohmann::json> written = client_->Update(kube::kSecrets, secret_.ns, object);
  if (!written.ok()) {
    return absl::Status(written.status().code(), "saving the quarantine in " + where + ": " +
                                                     std::string(written.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace tunnelmesh
