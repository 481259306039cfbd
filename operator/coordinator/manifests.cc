#include "operator/coordinator/manifests.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "lib/base/file.h"
#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

namespace fs = std::filesystem;

bool IsYamlFile(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml";
}

// The directory's YAML files, sorted; kUnavailable when it cannot be listed to the end. The
// iterator is advanced with error codes: its throwing operator++ is not for this code base.
absl::StatusOr<std::vector<fs::path>> YamlFiles(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_regular_file(type_ec) && IsYamlFile(it->path())) files.push_back(it->path());
  }
  if (ec) {
    return absl::UnavailableError("cannot read the manifest directory (--manifests) " + dir + ": " +
                                  ec.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

absl::StatusOr<std::vector<MeshSpec>> LoadManifests(const std::string& dir,
                                                    ManifestPolicies* policies) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    // A directory this user may not reach (a parent without x) fails the same test: say why.
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return absl::UnavailableError("cannot read the manifest directory (--manifests) " + dir +
                                    ": " + ec.message());
    }
    return absl::InvalidArgumentError("--manifests " + dir + " is not a directory");
  }
  absl::StatusOr<std::vector<fs::path>> files = YamlFiles(dir);
  if (!files.ok()) return files.status();
  std::vector<MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  for (const fs::path& path : *files) {
    absl::StatusOr<std::string> text = ReadFile(path.string());
    // A file listed a moment ago that cannot be read now is a read error like the directory's: it
    // must not turn into a set without that file's Meshes.
    if (!text.ok()) return absl::UnavailableError(text.status().message());
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

absl::StatusOr<std::string> ManifestFingerprint(const std::string& dir) {
  absl::StatusOr<std::vector<fs::path>> files = YamlFiles(dir);
  if (!files.ok()) return files.status();
  std::string out;
  for (const fs::path& path : *files) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) continue;
    out += path.string() + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + "\n";
  }
  return out;
}

ManifestWatcher::ManifestWatcher(std::string dir, std::string fingerprint)
    : dir_(std::move(dir)), fingerprint_(std::move(fingerprint)) {}

std::optional<ManifestWatcher::Change> ManifestWatcher::Poll() {
  absl::StatusOr<std::string> now = ManifestFingerprint(dir_);
  if (!now.ok()) {
    ++read_errors_;
    LogError(now.status());
    return std::nullopt;
  }
  if (*now == fingerprint_) return std::nullopt;
  Change change;
  absl::StatusOr<std::vector<MeshSpec>> meshes = LoadManifests(dir_, &change.policies);
  if (!meshes.ok()) {
    if (meshes.status().code() == absl::StatusCode::kUnavailable) {
      ++read_errors_;  // Not recorded as seen: the next poll reads again.
    } else {
      fingerprint_ = *std::move(now);  // Invalid: wait for the next edit.
    }
    LogError(meshes.status());
    return std::nullopt;
  }
  fingerprint_ = *std::move(now);
  last_error_.clear();
  change.meshes = *std::move(meshes);
  if (change.meshes.empty()) {
    TM_LOG_WARN(
        "the manifest directory {} holds no Mesh now: every Mesh and its members are "
        "removed",
        dir_);
  }
  return change;
}

void ManifestWatcher::LogError(const absl::Status& status) {
  const std::string message(status.message());
  if (message == last_error_) return;
  last_error_ = message;
  TM_LOG_ERROR("manifests not applied, keeping the current Meshes: {}", message);
}

}  // namespace tunnelmesh
