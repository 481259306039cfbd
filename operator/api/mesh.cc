#include "operator/api/mesh.h"

#include <sodium.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/dns/message.h"
#include "operator/api/known_fields.h"
#include "yaml-cpp/yaml.h"

namespace tunnelmesh {
namespace {

// As the CRD's schema allows: a day.
constexpr uint32_t kMaxDnsTtlSeconds = 86400;

std::string Where(const std::string& file, const std::string& kind, const std::string& name) {
  return file + ": " + kind + " \"" + name + "\"";
}

std::string Scalar(const YAML::Node& node) {
  return node && node.IsScalar() ? node.as<std::string>() : std::string();
}

std::optional<std::string> Base64Decode(const std::string& text) {
  std::string out(text.size(), '\0');
  size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), "\n\r ", &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

absl::Status ParseMesh(const YAML::Node& doc, const std::string& file, MeshSpec* mesh) {
  mesh->source = file;
  mesh->name = Scalar(doc["metadata"]["name"]);
  const std::string where = Where(file, "Mesh", mesh->name);
  if (!dns::IsDnsLabel(mesh->name)) {
    return absl::InvalidArgumentError(file + ": Mesh metadata.name \"" + mesh->name +
                                      "\" must be a DNS label (lowercase letters, digits, '-')");
  }
  const YAML::Node spec = doc["spec"];
  if (!spec || !spec.IsMap()) return absl::InvalidArgumentError(where + ": spec is missing");
  const std::string v4 = Scalar(spec["ipv4CIDR"]);
  if (v4.empty()) return absl::InvalidArgumentError(where + ": spec.ipv4CIDR is required");
  absl::StatusOr<Prefix> v4_prefix = Prefix::Parse(v4);
  if (!v4_prefix.ok() || !v4_prefix->address().is_v4() || v4_prefix->length() > 30) {
    return absl::InvalidArgumentError(where + ": spec.ipv4CIDR \"" + v4 +
                                      "\" must be an IPv4 prefix of length /30 or shorter, e.g. "
                                      "10.99.0.0/16");
  }
  mesh->ipv4_cidr = *v4_prefix;
  const std::string v6 = Scalar(spec["ipv6CIDR"]);
  if (!v6.empty()) {
    absl::StatusOr<Prefix> v6_prefix = Prefix::Parse(v6);
    if (!v6_prefix.ok() || !v6_prefix->address().is_v6() || v6_prefix->length() > 120) {
      return absl::InvalidArgumentError(where + ": spec.ipv6CIDR \"" + v6 +
                                        "\" must be an IPv6 prefix of length /120 or shorter, "
                                        "e.g. fd99:99::/48");
    }
    mesh->ipv6_cidr = *v6_prefix;
  }
  const std::string domain = Scalar(spec["domain"]);
  if (!domain.empty()) mesh->domain = domain;
  const std::string action = Scalar(spec["defaultAction"]);
  if (!action.empty()) {
    if (action != "Deny" && action != "Allow") {
      return absl::InvalidArgumentError(where + ": spec.defaultAction \"" + action +
                                        "\" must be Deny or Allow");
    }
    mesh->default_action = action;
  }
  if (const YAML::Node dns = spec["dns"]; dns) {
    if (!dns.IsMap()) return absl::InvalidArgumentError(where + ": spec.dns must be a mapping");
    for (auto [key, out] : {std::pair{"ttlSeconds", &mesh->dns_ttl_seconds},
                            std::pair{"negativeTTLSeconds", &mesh->dns_negative_ttl_seconds}}) {
      const std::string text = Scalar(dns[key]);
      if (text.empty()) continue;
      uint32_t seconds = 0;
      if (!absl::SimpleAtoi(text, &seconds) || seconds > kMaxDnsTtlSeconds) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": spec.dns.", key, " \"", text,
                                                       "\" must be a number of seconds from 0 to ",
                                                       kMaxDnsTtlSeconds));
      }
      *out = seconds;
    }
  }
  if (const YAML::Node generation = spec["presharedKeyGeneration"]; generation) {
    const std::string text = Scalar(generation);
    // An integer >= 0 (the CRD's schema says the same; standalone manifests have no schema).
    if (!generation.IsScalar() || text.empty() || text.size() > 18 ||
        !absl::SimpleAtoi(text, &mesh->preshared_key_generation) ||
        text.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError(where + ": spec.presharedKeyGeneration \"" + text +
                                        "\" must be an integer >= 0 (raise it by one to roll the "
                                        "mesh's preshared key over)");
    }
  }
  if (const YAML::Node cap = spec["joinTokenMaxMembers"]; cap) {
    const std::string text = Scalar(cap);
    if (!cap.IsScalar() || text.empty() || text.size() > 7 ||
        text.find_first_not_of("0123456789") != std::string::npos ||
        !absl::SimpleAtoi(text, &mesh->join_token_max_members) ||
        mesh->join_token_max_members > kMaxJoinTokenMembers) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": spec.joinTokenMaxMembers \"", text,
                       "\" must be an integer from 0 (no cap) to ", kMaxJoinTokenMembers,
                       ": the most members the mesh may have for the join token to admit "
                       "another"));
    }
  }
  const YAML::Node ref = spec["joinTokenSecretRef"];
  if (!ref || !ref.IsMap()) {
    return absl::InvalidArgumentError(where +
                                      ": spec.joinTokenSecretRef {namespace, name, key} "
                                      "is required");
  }
  mesh->join_token_ref.namespace_name = Scalar(ref["namespace"]);
  mesh->join_token_ref.name = Scalar(ref["name"]);
  if (!Scalar(ref["key"]).empty()) mesh->join_token_ref.key = Scalar(ref["key"]);
  if (mesh->join_token_ref.namespace_name.empty() || mesh->join_token_ref.name.empty()) {
    return absl::InvalidArgumentError(where + ": spec.joinTokenSecretRef needs namespace and name");
  }
  return absl::OkStatus();
}

absl::Status ParseSecret(const YAML::Node& doc, const std::string& file,
                         std::map<std::string, std::map<std::string, std::string>>* secrets) {
  const std::string ns = Scalar(doc["metadata"]["namespace"]);
  const std::string name = Scalar(doc["metadata"]["name"]);
  const std::string where = Where(file, "Secret", ns + "/" + name);
  auto& values = (*secrets)[ns + "/" + name];
  for (const char* field : {"stringData", "data"}) {
    if (const YAML::Node map = doc[field]; map && !map.IsMap() && !map.IsNull()) {
      return absl::InvalidArgumentError(where + ": " + field + " must be a mapping of key: value");
    }
  }
  if (const YAML::Node string_data = doc["stringData"]; string_data && string_data.IsMap()) {
    for (const auto& kv : string_data) values[kv.first.as<std::string>()] = Scalar(kv.second);
  }
  if (const YAML::Node data = doc["data"]; data && data.IsMap()) {
    for (const auto& kv : data) {
      std::optional<std::string> decoded = Base64Decode(Scalar(kv.second));
      if (!decoded) {
        return absl::InvalidArgumentError(where + ": data." + kv.first.as<std::string>() +
                                          " is not base64");
      }
      values[kv.first.as<std::string>()] = *decoded;
    }
  }
  return absl::OkStatus();
}

constexpr int kMaxYamlDepth = 64;

// object.metadata[key] when it is a string, else "".
std::string MetadataString(const nlohmann::json& object, const char* key) {
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return "";
  auto value = metadata->find(key);
  return value != metadata->end() && value->is_string() ? value->get<std::string>() : "";
}

// Converts one YAML node; false when it nests deeper than kMaxYamlDepth.
bool ToJson(const YAML::Node& node, int depth, nlohmann::json* out) {
  if (depth > kMaxYamlDepth) return false;
  switch (node.Type()) {
    case YAML::NodeType::Map:
      *out = nlohmann::json::object();
      for (const auto& kv : node) {
        nlohmann::json value;
        if (!ToJson(kv.second, depth + 1, &value)) return false;
        (*out)[Scalar(kv.first)] = std::move(value);
      }
      return true;
    case YAML::NodeType::Sequence:
      *out = nlohmann::json::array();
      for (const YAML::Node& item : node) {
        nlohmann::json value;
        if (!ToJson(item, depth + 1, &value)) return false;
        out->push_back(std::move(value));
      }
      return true;
    case YAML::NodeType::Scalar: {
      const std::string text = node.Scalar();
      if (node.Tag() != "!") {  // "!" marks a quoted scalar: always a string.
        if (text == "true" || text == "false") {
          *out = text == "true";
          return true;
        }
        if (text == "null" || text == "~") {
          *out = nullptr;
          return true;
        }
        if (!text.empty() && text.size() <= 18 &&
            text.find_first_not_of("0123456789", text[0] == '-' ? 1 : 0) == std::string::npos &&
            text != "-") {
          *out = std::stoll(text);
          return true;
        }
      }
      *out = text;
      return true;
    }
    default:
      *out = nullptr;
      return true;
  }
}

}  // namespace

absl::StatusOr<nlohmann::json> YamlTextToJson(const std::string& text) {
  // yaml-cpp reports errors by throwing; caught here.
  try {
    nlohmann::json out;
    if (!ToJson(YAML::Load(text), 0, &out)) {
      return absl::InvalidArgumentError("YAML nests deeper than 64 levels");
    }
    return out;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(std::string("not valid YAML: ") + e.what());
  }
}

absl::Status ParseManifestText(const std::string& text, const std::string& file,
                               std::vector<MeshSpec>* meshes,
                               std::map<std::string, std::map<std::string, std::string>>* secrets,
                               ManifestPolicies* policies) {
  // yaml-cpp reports errors by throwing; this is the one place they are caught.
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(file + ": not valid YAML: " + e.what());
  }
  try {
    for (const YAML::Node& doc : docs) {
      if (!doc || doc.IsNull()) continue;
      if (!doc.IsMap()) return absl::InvalidArgumentError(file + ": a document is not a mapping");
      const std::string api = Scalar(doc["apiVersion"]);
      const std::string kind = Scalar(doc["kind"]);
      // The fields are checked on the JSON form, the one the cluster gives the same object.
      nlohmann::json object;
      const bool converted = ToJson(doc, 0, &object);
      const YAML::Node metadata = doc["metadata"];
      const std::string name = converted                      ? MetadataString(object, "name")
                               : metadata && metadata.IsMap() ? Scalar(metadata["name"])
                                                              : "";
      // A PeerPolicy that nests too deeply is rejected alone, below.
      if (!converted && kind != "PeerPolicy") {
        return absl::InvalidArgumentError(file + ": a document nests deeper than 64 levels");
      }
      if (kind == "Mesh") {
        if (api != "tunnelmesh.io/v1alpha1") {
          return absl::InvalidArgumentError(file + ": Mesh has apiVersion \"" + api +
                                            "\"; expected tunnelmesh.io/v1alpha1");
        }
        if (absl::Status s = CheckKnownFields(object, MeshObjectFields()); !s.ok()) {
          return absl::InvalidArgumentError(Where(file, "Mesh", name) + ": " +
                                            std::string(s.message()));
        }
        MeshSpec mesh;
        if (absl::Status s = ParseMesh(doc, file, &mesh); !s.ok()) return s;
        meshes->push_back(std::move(mesh));
      } else if (kind == "Secret") {
        if (absl::Status s = CheckKnownFields(object, SecretObjectFields()); !s.ok()) {
          return absl::InvalidArgumentError(
              Where(file, "Secret", MetadataString(object, "namespace") + "/" + name) + ": " +
              std::string(s.message()));
        }
        if (absl::Status s = ParseSecret(doc, file, secrets); !s.ok()) return s;
      } else if (kind == "PeerPolicy") {
        // Read only for callers that want policies (the reconciler of a Mesh does not).
        if (policies == nullptr) continue;
        const std::string where = Where(file, "PeerPolicy", name);
        absl::StatusOr<PeerPolicySpec> policy =
            api != "tunnelmesh.io/v1alpha1"
                ? absl::InvalidArgumentError("apiVersion \"" + api +
                                             "\": expected tunnelmesh.io/v1alpha1")
            : !converted   ? absl::InvalidArgumentError("nests deeper than 64 levels")
            : name.empty() ? absl::InvalidArgumentError("metadata.name is required")
                           : ParsePeerPolicy(object);
        if (policy.ok()) {
          policies->accepted.push_back(*std::move(policy));
        } else {
          policies->rejected.push_back(where + ": " + std::string(policy.status().message()));
        }
      } else {
        const std::string what = kind.empty()
                                     ? "a document without kind"
                                     : "kind " + kind + (name.empty() ? "" : " (\"" + name + "\")");
        return absl::InvalidArgumentError(
            file + ": " + what +
            " is not read from manifests: they hold Mesh and PeerPolicy (apiVersion "
            "tunnelmesh.io/v1alpha1) and Secret (v1) objects only; move it out of the directory");
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(file + ": unexpected YAML structure: " + e.what());
  }
  return absl::OkStatus();
}

absl::Status SetJoinToken(MeshSpec* mesh, const std::map<std::string, std::string>& values) {
  auto value = values.find(mesh->join_token_ref.key);
  if (value == values.end() || value->second.size() < 16) {
    return absl::InvalidArgumentError(
        "Mesh \"" + mesh->name + "\": Secret " + mesh->join_token_ref.namespace_name + "/" +
        mesh->join_token_ref.name + " needs key \"" + mesh->join_token_ref.key +
        "\" holding a token of at least 16 characters");
  }
  mesh->join_token = value->second;
  return absl::OkStatus();
}

}  // namespace tunnelmesh
