#include "operator/kube/resource.h"

namespace tunnelmesh::kube {

const Resource kMeshes{"tunnelmesh.io", "v1alpha1", "meshes", false, "Mesh"};
const Resource kMeshPeers{"tunnelmesh.io", "v1alpha1", "meshpeers", false, "MeshPeer"};
const Resource kPeerPolicies{"tunnelmesh.io", "v1alpha1", "peerpolicies", false, "PeerPolicy"};
const Resource kNodes{"", "v1", "nodes", false, "Node"};
const Resource kPods{"", "v1", "pods", true, "Pod"};
const Resource kNamespaces{"", "v1", "namespaces", false, "Namespace"};
const Resource kSecrets{"", "v1", "secrets", true, "Secret"};
const Resource kConfigMaps{"", "v1", "configmaps", true, "ConfigMap"};
const Resource kEvents{"", "v1", "events", true, "Event"};
const Resource kLeases{"coordination.k8s.io", "v1", "leases", true, "Lease"};
const Resource kTokenReviews{"authentication.k8s.io", "v1", "tokenreviews", false, "TokenReview"};

std::string Resource::ApiVersion() const { return group.empty() ? version : group + "/" + version; }

std::string_view PatchContentType(PatchType type) {
  switch (type) {
    case PatchType::kJson:
      return "application/json-patch+json";
    case PatchType::kStrategicMerge:
      return "application/strategic-merge-patch+json";
    case PatchType::kMerge:
      break;
  }
  return "application/merge-patch+json";
}

namespace {

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace

std::string ResourcePath(const Resource& resource, std::string_view ns, std::string_view name,
                         std::string_view subresource) {
  std::string path = resource.group.empty() ? "/api/" + resource.version
                                            : "/apis/" + resource.group + "/" + resource.version;
  if (resource.namespaced && !ns.empty()) {
    path += "/namespaces/";
    path += PercentEncode(ns);
  }
  path += "/" + resource.plural;
  if (!name.empty()) {
    path += "/";
    path += PercentEncode(name);
    if (!subresource.empty()) {
      path += "/";
      path += subresource;
    }
  }
  return path;
}

std::string QueryString(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [key, value] : params) {
    if (value.empty()) continue;
    out += out.empty() ? "?" : "&";
    out += PercentEncode(key) + "=" + PercentEncode(value);
  }
  return out;
}

}  // namespace tunnelmesh::kube
