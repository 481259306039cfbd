#include "operator/api/pod_member.h"

#include <cstring>

#include "lib/crypto/blake2s.h"
#include "lib/dns/message.h"
#include "operator/api/peer_policy.h"

namespace tunnelmesh {
namespace {

constexpr char kPodIdContext[] = "tunnelmesh pod member v1";
constexpr size_t kMaxUid = 128;

Bytes AsBytes(const std::string& s) {
  return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

bool IsDnsSubdomain(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    if (!dns::IsDnsLabel(name.substr(start, dot - start))) return false;
    start = dot + 1;
  }
  return true;
}

}  // namespace

PublicKey PodMemberId(const PodIdentity& pod) {
  const uint8_t separator = 0;
  PublicKey id;
  uint8_t hash[kHashSize];
  Blake2s({Bytes(reinterpret_cast<const uint8_t*>(kPodIdContext), sizeof(kPodIdContext) - 1),
           Bytes(pod.host.bytes.data(), pod.host.bytes.size()), AsBytes(pod.namespace_name),
           Bytes(&separator, 1), AsBytes(pod.pod_name), Bytes(&separator, 1), AsBytes(pod.uid)},
          hash);
  std::memcpy(id.bytes.data(), hash, id.bytes.size());
  return id;
}

std::string PodMemberName(const std::string& namespace_name, const std::string& pod_name) {
  return pod_name + "." + namespace_name + ".pod";
}

absl::Status CheckPodRef(const std::string& namespace_name, const std::string& pod_name,
                         const std::string& uid) {
  if (!dns::IsDnsLabel(namespace_name)) {
    return absl::InvalidArgumentError("pod namespace \"" + namespace_name.substr(0, 64) +
                                      "\" is not a DNS label (lowercase letters, digits and '-')");
  }
  if (!IsDnsSubdomain(pod_name) || PodMemberName(namespace_name, pod_name).size() > 253) {
    return absl::InvalidArgumentError("pod name \"" + pod_name.substr(0, 64) +
                                      "\" is not a DNS subdomain that fits a member name "
                                      "(\"<pod>.<namespace>.pod\", at most 253 characters)");
  }
  if (uid.empty() || uid.size() > kMaxUid ||
      uid.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
          std::string::npos) {
    return absl::InvalidArgumentError(
        "pod uid must be 1 to 128 letters, digits, '-' or '_' (the Pod's metadata.uid or the "
        "container ID)");
  }
  return absl::OkStatus();
}

nlohmann::json PodIdentityJson(const PodIdentity& pod) {
  nlohmann::json json = {{"host", pod.host.ToBase64()},
                         {"namespace", pod.namespace_name},
                         {"name", pod.pod_name},
                         {"uid", pod.uid}};
  if (!pod.namespace_labels.empty()) json["namespaceLabels"] = pod.namespace_labels;
  return json;
}

absl::StatusOr<PodIdentity> ParsePodIdentity(const nlohmann::json& json, const std::string& where) {
  if (!json.is_object()) return absl::InvalidArgumentError(where + " must be an object");
  PodIdentity pod;
  auto text = [&](const char* key, std::string* out) -> absl::Status {
    auto it = json.find(key);
    if (it == json.end() || !it->is_string()) {
      return absl::InvalidArgumentError(where + "." + key + " must be a string");
    }
    *out = it->get<std::string>();
    return absl::OkStatus();
  };
  std::string host;
  for (auto [key, out] : {std::pair{"host", &host}, {"namespace", &pod.namespace_name},
                          {"name", &pod.pod_name}, {"uid", &pod.uid}}) {
    if (absl::Status s = text(key, out); !s.ok()) return s;
  }
  absl::StatusOr<PublicKey> key = PublicKey::FromBase64(host);
  if (!key.ok() || key->IsZero()) {
    return absl::InvalidArgumentError(where + ".host is not a base64 public key");
  }
  pod.host = *key;
  if (absl::Status s = CheckPodRef(pod.namespace_name, pod.pod_name, pod.uid); !s.ok()) {
    return absl::InvalidArgumentError(where + ": " + std::string(s.message()));
  }
  if (auto it = json.find("namespaceLabels"); it != json.end() && !it->is_null()) {
    if (!it->is_object()) return absl::InvalidArgumentError(where + ".namespaceLabels must be a map");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) {
        return absl::InvalidArgumentError(where + ".namespaceLabels." + k + " must be a string");
      }
      pod.namespace_labels[k] = v.get<std::string>();
    }
  }
  return pod;
}

}  // namespace tunnelmesh
