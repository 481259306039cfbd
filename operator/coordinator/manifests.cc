#include "operator/coordinator/manifests.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "lib/base/file.h"

namespace tunnelmesh {
namespace {

namespace fs = std::filesystem;

bool IsYamlFile(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml";
}

}  // namespace

absl::StatusOr<std::vector<MeshSpec>> LoadManifests(const std::string& dir,
                                                    ManifestPolicies* policies) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError("--manifests " + dir + " is not a directory");
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && IsYamlFile(entry.path())) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  for (const fs::path& path : files) {
    absl::StatusOr<std::string> text = ReadFile(path.string());
    if (!text.ok()) return text.status();
    if (absl::Status s = ParseManifestText(*text, path.string(), &meshes, &secrets, policies);
        !s.ok()) {
      return s;
    }
  }
  std::set<std::string> names;
  for (MeshSpec& mesh : meshes) {
    if (!names.insert(mesh.name).second) {
      return absl::InvalidArgumentError(mesh.source + ": Mesh \"" + mesh.name +
                                        "\" is defined twice");
    }
    const std::string ref = mesh.join_token_ref.namespace_name + "/" + mesh.join_token_ref.name;
    auto secret = secrets.find(ref);
    if (secret == secrets.end()) {
      return absl::InvalidArgumentError(mesh.source + ": Mesh \"" + mesh.name +
                                        "\": spec.joinTokenSecretRef names Secret " + ref +
                                        ", which no manifest in " + dir + " defines");
    }
    if (absl::Status s = SetJoinToken(&mesh, secret->second); !s.ok()) {
      return absl::InvalidArgumentError(mesh.source + ": " + std::string(s.message()));
    }
  }
  if (policies != nullptr) {
    std::vector<PeerPolicySpec> kept;
    std::set<std::string> policy_names;
    for (PeerPolicySpec& policy : policies->accepted) {
      if (!names.count(policy.mesh)) {
        policies->rejected.push_back("PeerPolicy \"" + policy.name + "\": spec.mesh names Mesh \"" +
                                     policy.mesh + "\", which no manifest in " + dir + " defines");
      } else if (!policy_names.insert(policy.name).second) {
        policies->rejected.push_back("PeerPolicy \"" + policy.name +
                                     "\" is defined twice: the first one applies");
      } else {
        kept.push_back(std::move(policy));
      }
    }
    policies->accepted = std::move(kept);
  }
  return meshes;
}

std::string ManifestFingerprint(const std::string& dir) {
  std::vector<std::string> parts;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!IsYamlFile(entry.path())) continue;
    struct stat st {};
    if (stat(entry.path().c_str(), &st) != 0) continue;
    parts.push_back(entry.path().string() + ":" + std::to_string(st.st_size) + ":" +
                    std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  }
  std::sort(parts.begin(), parts.end());
  std::string out;
  for (const auto& p : parts) out += p + "\n";
  return out;
}

}  // namespace tunnelmesh
