#include "operator/api/known_fields.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tunnelmesh {
namespace {

// ObjectMeta as the API server returns it: objects read from the cluster carry all of these, and
// a manifest exported with kubectl may too. Their values are not looked into.
constexpr KnownField kMetadata[] = {
    {"name"},
    {"generateName"},
    {"namespace"},
    {"selfLink"},
    {"uid"},
    {"resourceVersion"},
    {"generation"},
    {"creationTimestamp"},
    {"deletionTimestamp"},
    {"deletionGracePeriodSeconds"},
    {"labels"},
    {"annotations"},
    {"ownerReferences"},
    {"finalizers"},
    {"managedFields"},
};

// Mesh spec (crds/mesh.yaml).
constexpr KnownField kMeshDns[] = {{"ttlSeconds"}, {"negativeTTLSeconds"}};
constexpr KnownField kSecretRef[] = {{"namespace"}, {"name"}, {"key"}};
constexpr KnownField kMeshSpec[] = {
    {"ipv4CIDR"},
    {"ipv6CIDR"},
    {"domain"},
    {"defaultAction"},
    {"dns", kMeshDns},
    {"joinTokenSecretRef", kSecretRef},
    {"presharedKeyGeneration"},
    {"joinTokenMaxMembers"},
};
// The status is the operator's to write; its fields are not checked.
constexpr KnownField kMeshObject[] = {
    {"apiVersion"}, {"kind"}, {"metadata", kMetadata}, {"spec", kMeshSpec}, {"status"},
};

// PeerPolicy spec (crds/peerpolicy.yaml).
constexpr KnownField kMatchExpression[] = {{"key"}, {"operator"}, {"values"}};
constexpr KnownField kLabelSelector[] = {{"matchLabels"},
                                         {"matchExpressions", kMatchExpression, true}};
constexpr KnownField kIpBlock[] = {{"cidr"}, {"except"}};
constexpr KnownField kInternet[] = {{"exitSelector", kLabelSelector}};
constexpr KnownField kPeerTerm[] = {
    {"names"},
    {"kinds"},
    {"ipBlock", kIpBlock},
    {"internet", kInternet},
    {"peerSelector", kLabelSelector},
    {"namespaceSelector", kLabelSelector},
    {"podSelector", kLabelSelector},
};
constexpr KnownField kPortRule[] = {{"protocol"}, {"port"}, {"endPort"}};
constexpr KnownField kPeerPolicySpec[] = {
    {"mesh"},
    {"action"},
    {"from", kPeerTerm, true},
    {"to", kPeerTerm, true},
    {"ports", kPortRule, true},
};
constexpr KnownField kPeerPolicyObject[] = {
    {"apiVersion"}, {"kind"}, {"metadata", kMetadata}, {"spec", kPeerPolicySpec}, {"status"},
};

// A core/v1 Secret: its fields are at the top level.
constexpr KnownField kSecretObject[] = {
    {"apiVersion"}, {"kind"}, {"metadata", kMetadata}, {"data"},
    {"stringData"}, {"type"}, {"immutable"},
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// neighbours each count one. Keys are short (at most a few dozen characters in practice); longer
// ones are not compared.
size_t EditDistance(const std::string& a, const std::string& b) {
  constexpr size_t kMaxCompared = 128;
  if (a.size() > kMaxCompared || b.size() > kMaxCompared) return std::max(a.size(), b.size());
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string Join(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "." + std::string(name);
}

const KnownField* Find(std::string_view name, std::span<const KnownField> fields) {
  for (const KnownField& f : fields) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace

std::span<const KnownField> MeshObjectFields() { return kMeshObject; }
std::span<const KnownField> PeerPolicyObjectFields() { return kPeerPolicyObject; }
std::span<const KnownField> SecretObjectFields() { return kSecretObject; }

std::string_view ClosestField(std::string_view name, std::span<const KnownField> fields) {
  const std::string lower = Lower(name);
  std::string_view best;
  size_t best_distance = 0;
  for (const KnownField& f : fields) {
    const size_t distance = EditDistance(lower, Lower(f.name));
    // About one typo per four letters, at most three.
    const size_t allowed = std::min<size_t>(3, std::max<size_t>(1, f.name.size() / 4));
    if (distance <= allowed && (best.empty() || distance < best_distance)) {
      best = f.name;
      best_distance = distance;
    }
  }
  return best;
}

absl::Status CheckKnownFields(const nlohmann::json& object, std::span<const KnownField> fields,
                              const std::string& path) {
  if (!object.is_object()) return absl::OkStatus();
  for (const auto& [key, value] : object.items()) {
    const KnownField* field = Find(key, fields);
    if (field == nullptr) {
      const std::string_view closest = ClosestField(key, fields);
      if (!closest.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown field ", Join(path, key), " (did you mean ", Join(path, closest), "?)"));
      }
      std::vector<std::string> names;
      for (const KnownField& f : fields) names.emplace_back(f.name);
      return absl::InvalidArgumentError(absl::StrCat("unknown field ", Join(path, key), " (",
                                                     path.empty() ? "the object" : path, " has ",
                                                     absl::StrJoin(names, ", "), ")"));
    }
    if (field->fields.empty()) continue;
    const std::string child = Join(path, key);
    if (!field->list) {
      if (absl::Status s = CheckKnownFields(value, field->fields, child); !s.ok()) return s;
      continue;
    }
    if (!value.is_array()) continue;
    for (size_t i = 0; i < value.size(); ++i) {
      if (absl::Status s =
              CheckKnownFields(value[i], field->fields, absl::StrCat(child, "[", i, "]"));
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> KnownFieldPaths(std::span<const KnownField> fields,
                                         const std::string& path) {
  std::vector<std::string> out;
  for (const KnownField& f : fields) {
    const std::string child = Join(path, f.name);
    out.push_back(child);
    if (f.fields.empty()) continue;
    for (std::string& sub : KnownFieldPaths(f.fields, f.list ? child + "[]" : child)) {
      out.push_back(std::move(sub));
    }
  }
  return out;
}

}  // namespace tunnelmesh
