#include "operator/reconcilers/coordinator_identity.h"

#include "absl/strings/escaping.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "operator/coordinator/state_store.h"
#include "operator/kube/api_status.h"
#include "operator/kube/config.h"

namespace tunnelmesh {
namespace {

// Secret data key -> file under the state directory.
const std::pair<const char*, const char*> kFiles[] = {{"ca.crt", "tls/ca.crt"},
                                                      {"ca.key", "tls/ca.key"},
                                                      {"server.crt", "tls/server.crt"},
                                                      {"server.key", "tls/server.key"},
                                                      {"relay.key", "relay.key"}};

}  // namespace

absl::StatusOr<SecretKey> LoadOrCreateKeyFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTrimmedFile(path);
  if (!text.ok() && !absl::IsNotFound(text.status())) return text.status();
  if (text.ok() && !text->empty()) {
    absl::StatusOr<SecretKey> key = SecretKey::FromBase64(*text);
    if (!key.ok()) return absl::DataLossError(path + " does not hold a key: move it away");
    return key;
  }
  SecretKey key = SecretKey::GeneratePrivate();
  if (absl::Status s = WriteFileAtomically(path, key.ToBase64() + "\n", 0600); !s.ok()) return s;
  return key;
}

absl::StatusOr<CoordinatorIdentity> LoadOrCreateIdentity(kube::Api* client,
                                                         const IdentityOptions& options) {
  const std::string where = "Secret " + options.ns + "/" + options.secret_name;
  // 0700, like the standalone state directory: the keys are copied here from the Secret.
  if (absl::Status s = CreatePrivateDirectories(options.state_dir + "/tls"); !s.ok()) {
    return absl::FailedPreconditionError(std::string(s.message()) + " (check --state-dir)");
  }
  absl::StatusOr<nlohmann::json> secret =
      client->Get(kube::kSecrets, options.ns, options.secret_name);
  const bool exists = secret.ok();
  if (!exists && !absl::IsNotFound(secret.status())) {
    return absl::Status(secret.status().code(),
                        "reading " + where + ": " + std::string(secret.status().message()));
  }
  if (exists) {
    const nlohmann::json data = secret->value("data", nlohmann::json::object());
    for (const auto& [key, file] : kFiles) {
      auto value = data.find(key);
      if (value == data.end() || !value->is_string()) continue;
      std::string decoded;
      if (!absl::Base64Unescape(value->get<std::string>(), &decoded)) {
        return absl::DataLossError(where + ": data." + key + " is not base64");
      }
      if (absl::Status s = WriteFileAtomically(options.state_dir + "/" + file, decoded, 0600);
          !s.ok()) {
        return s;
      }
    }
  }
  absl::StatusOr<TlsIdentity> tls = LoadOrCreateTlsIdentity(options.state_dir + "/tls");
  if (!tls.ok()) return tls.status();
  absl::StatusOr<SecretKey> relay_key = LoadOrCreateKeyFile(options.state_dir + "/relay.key");
  if (!relay_key.ok()) return relay_key.status();
  absl::StatusOr<std::string> hash = CaCertHash(tls->ca_cert_pem);
  if (!hash.ok()) return hash.status();

  // Merged into what the Secret holds: entries this function does not own (the meshes'
  // preshared keys, psk.<mesh>, written by SecretPresharedKeyStore) stay as they are. Dropping
  // them would give every mesh a new key at the next start, cutting every tunnel.
  const nlohmann::json old_data =
      exists ? secret->value("data", nlohmann::json::object()) : nlohmann::json::object();
  nlohmann::json data = old_data.is_object() ? old_data : nlohmann::json::object();
  for (const auto& [key, file] : kFiles) {
    absl::StatusOr<std::string> contents = kube::ReadWholeFile(options.state_dir + "/" + file);
    if (!contents.ok()) return contents.status();
    data[key] = absl::Base64Escape(*contents);
  }
  if (!exists || old_data != data) {
    nlohmann::json object = {
        {"apiVersion", "v1"},
        {"kind", "Secret"},
        {"type", "Opaque"},
        {"metadata",
         {{"name", options.secret_name},
          {"namespace", options.ns},
          {"labels", {{"app.kubernetes.io/managed-by", "tunnelmesh-operator"}}}}},
        {"data", data}};
    // Update (not patch): the chart's Role grants get, create and update on this Secret only.
    if (exists) {
      object = *secret;
      object["data"] = data;
    }
    absl::StatusOr<nlohmann::json> written =
        exists ? client->Update(kube::kSecrets, options.ns, object)
               : client->Create(kube::kSecrets, options.ns, object);
    if (!written.ok()) {
      return absl::Status(written.status().code(), "saving the coordinator's keys in " + where +
                                                       ": " +
                                                       std::string(written.status().message()));
    }
    TM_LOG_INFO("coordinator keys saved in {}", where);
  }

  const nlohmann::json ca_data = {{"ca.crt", tls->ca_cert_pem}, {"ca-hash", *hash}};
  absl::StatusOr<nlohmann::json> configmap =
      client->Get(kube::kConfigMaps, options.ns, options.configmap_name);
  absl::StatusOr<nlohmann::json> published;
  if (configmap.ok()) {
    if (configmap->value("data", nlohmann::json::object()) != ca_data) {
      nlohmann::json updated = *configmap;
      updated["data"] = ca_data;
      published = client->Update(kube::kConfigMaps, options.ns, updated);
    } else {
      published = *configmap;
    }
  } else if (absl::IsNotFound(configmap.status())) {
    published =
        client->Create(kube::kConfigMaps, options.ns,
                       {{"apiVersion", "v1"},
                        {"kind", "ConfigMap"},
                        {"metadata", {{"name", options.configmap_name}, {"namespace", options.ns}}},
                        {"data", ca_data}});
  } else {
    published = configmap.status();
  }
  if (!published.ok()) {
    return absl::Status(published.status().code(), "publishing the CA in ConfigMap " + options.ns +
                                                       "/" + options.configmap_name + ": " +
                                                       std::string(published.status().message()));
  }
  return CoordinatorIdentity{*std::move(tls), *std::move(relay_key), *std::move(hash)};
}

}  // namespace tunnelmesh
