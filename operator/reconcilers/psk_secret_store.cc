#include "operator/reconcilers/psk_secret_store.h"

#include "absl/strings/escaping.h"
#include "operator/kube/resource.h"

namespace tunnelmesh {

absl::Status SecretPresharedKeyStore::Context(const absl::Status& s,
                                              const std::string& doing) const {
  return absl::Status(s.code(), doing + " " + Where() + ": " + std::string(s.message()));
}

absl::StatusOr<PresharedKeyRecords> SecretPresharedKeyStore::Load() {
  absl::StatusOr<nlohmann::json> secret = api_->Get(kube::kSecrets, ns_, name_);
  if (absl::IsNotFound(secret.status())) return PresharedKeyRecords();
  if (!secret.ok()) return Context(secret.status(), "reading");
  PresharedKeyRecords records;
  // A named copy: items() of a temporary would outlive it.
  const nlohmann::json data = secret->value("data", nlohmann::json::object());
  if (!data.is_object()) {
    return absl::DataLossError(Where() +
                               ": data is not an object of base64 values; restore the Secret from "
                               "a backup (its psk.<mesh> entries are the meshes' preshared keys)");
  }
  for (const auto& [key, value] : data.items()) {
    if (key.rfind(kPrefix, 0) != 0) continue;
    const std::string where = Where() + " data." + key;
    const std::string mesh = key.substr(kPrefix.size());
    std::string text;
    if (mesh.empty() || !value.is_string() ||
        !absl::Base64Unescape(value.get<std::string>(), &text)) {
      return absl::DataLossError(
          where +
          " is not a base64 preshared-key record; restore it from a "
          "backup, or remove the entry to give the mesh a new preshared key");
    }
    absl::StatusOr<MeshPresharedKey> record = DecodePresharedKey(text, where);
    if (!record.ok()) return record.status();
    records.emplace(mesh, *std::move(record));
  }
  return records;
}

absl::Status SecretPresharedKeyStore::Save(const PresharedKeyRecords& records) {
  absl::Status last;
  for (int attempt = 0; attempt < kUpdateAttempts; ++attempt) {
    absl::StatusOr<nlohmann::json> secret = api_->Get(kube::kSecrets, ns_, name_);
    if (absl::IsNotFound(secret.status())) {
      return absl::NotFoundError(Where() +
                                 " is gone: restart the operator to create it again (the meshes "
                                 "then get new preshared keys)");
    }
    if (!secret.ok()) return Context(secret.status(), "reading");
    nlohmann::json object = *std::move(secret);
    nlohmann::json data = object.value("data", nlohmann::json::object());
    if (!data.is_object()) data = nlohmann::json::object();
    nlohmann::json next = nlohmann::json::object();
    for (const auto& [key, value] : data.items()) {
      if (key.rfind(kPrefix, 0) != 0) next[key] = value;  // Not ours: kept as it is.
    }
    for (const auto& [mesh, record] : records) {
      next[std::string(kPrefix) + mesh] = absl::Base64Escape(EncodePresharedKey(record));
    }
    if (next == data) return absl::OkStatus();
    object["data"] = std::move(next);
    // The resourceVersion from the Get makes a concurrent writer's change a conflict: read again.
    absl::StatusOr<nlohmann::json> written = api_->Update(kube::kSecrets, ns_, object);
    if (written.ok()) return absl::OkStatus();
    last = written.status();
    if (last.code() != absl::StatusCode::kAborted) break;
  }
  return Context(last, "saving the meshes' preshared keys in");
}

}  // namespace tunnelmesh
