#include "node-agent/cni/conflist_installer.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "lib/base/file.h"
#include "lib/base/log.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;

bool IsConfigName(const std::string& name) {
  auto ends = [&](std::string_view suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".conflist") || ends(".conf") || ends(".json");
}

bool IsOurs(const json& plugin) {
  return plugin.is_object() && plugin.value("type", json()) == json(kPluginType);
}

absl::StatusOr<json> ReadConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  json config = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(path + " is not a JSON object: fix or remove it");
  }
  return config;
}

absl::Status WriteConfig(const std::string& path, const json& config) {
  return WriteFileAtomically(path, config.dump(2) + "\n", 0644);
}

std::vector<std::string> ConfigFiles(const std::string& conf_dir) {
  std::vector<std::string> names;
  if (DIR* dir = opendir(conf_dir.c_str())) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (IsConfigName(name)) names.push_back(std::move(name));
    }
    closedir(dir);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Copies `from` to `to` through a temporary file and a rename, mode 0755.
absl::Status CopyBinary(const std::string& from, const std::string& to) {
  absl::StatusOr<std::string> bytes = ReadFile(from);
  if (!bytes.ok()) return bytes.status();
  if (absl::StatusOr<std::string> existing = ReadFile(to); existing.ok() && *existing == *bytes) {
    return absl::OkStatus();
  }
  return WriteFileAtomically(to, *bytes, 0755);
}

}  // namespace

json PluginEntry(const InstallOptions& options) {
  json entry = {{"type", kPluginType}};
  if (!options.mesh.empty()) entry["mesh"] = options.mesh;
  if (!options.agent_socket.empty()) entry["agentSocket"] = options.agent_socket;
  if (!options.pod_interface.empty()) entry["podInterface"] = options.pod_interface;
  return entry;
}

absl::StatusOr<json> WithPlugin(const json& config, const json& entry) {
  json out = WithoutPlugin(config);
  if (!out.contains("plugins")) {
    // A single-plugin configuration becomes a chain of it and us.
    if (!out.contains("type")) {
      return absl::InvalidArgumentError(
          "the CNI configuration has neither \"plugins\" nor \"type\": it is not a network "
          "configuration");
    }
    json single = out;
    single.erase("cniVersion");
    single.erase("name");
    out = {{"cniVersion", config.value("cniVersion", json("0.4.0"))},
           {"name", config.value("name", json("network"))},
           {"plugins", json::array({single})}};
  }
  if (!out["plugins"].is_array() || out["plugins"].empty()) {
    return absl::InvalidArgumentError("the CNI configuration's \"plugins\" is not a non-empty list");
  }
  out["plugins"].push_back(entry);
  return out;
}

json WithoutPlugin(const json& config) {
  json out = config;
  if (out.contains("plugins") && out["plugins"].is_array()) {
    json kept = json::array();
    for (const json& plugin : out["plugins"]) {
      if (!IsOurs(plugin)) kept.push_back(plugin);
    }
    out["plugins"] = std::move(kept);
  }
  return out;
}

bool HasPlugin(const json& config, const json& entry) {
  if (!config.contains("plugins") || !config["plugins"].is_array()) return false;
  for (const json& plugin : config["plugins"]) {
    if (plugin == entry) return true;
  }
  return false;
}

absl::StatusOr<std::string> PrimaryConfig(const std::string& conf_dir) {
  std::vector<std::string> names = ConfigFiles(conf_dir);
  if (names.empty()) {
    return absl::NotFoundError("no CNI network configuration (*.conflist, *.conf) in " + conf_dir +
                               " yet: tunnelmesh-cni chains after the cluster's primary CNI, "
                               "which writes one when it starts");
  }
  return conf_dir + "/" + names.front();
}

absl::Status Install(const InstallOptions& options) {
  if (absl::Status s = CopyBinary(options.binary, options.bin_dir + "/" + kPluginType); !s.ok()) {
    return absl::Status(s.code(), "copying the plugin into " + options.bin_dir + ": " +
                                      std::string(s.message()));
  }
  absl::StatusOr<std::string> path = PrimaryConfig(options.conf_dir);
  if (!path.ok()) return path.status();
  absl::StatusOr<json> config = ReadConfig(*path);
  if (!config.ok()) return config.status();
  const json entry = PluginEntry(options);
  if (HasPlugin(*config, entry)) return absl::OkStatus();
  absl::StatusOr<json> patched = WithPlugin(*config, entry);
  if (!patched.ok()) return absl::InvalidArgumentError(*path + ": " + std::string(patched.status().message()));
  std::string target = *path;
  const bool single = !config->contains("plugins");
  if (single) target = path->substr(0, path->rfind('.')) + ".conflist";
  if (absl::Status s = WriteConfig(target, *patched); !s.ok()) return s;
  if (single && target != *path && unlink(path->c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError("removing " + *path + " after writing " + target + ": " +
                               std::strerror(errno));
  }
  TM_LOG_INFO("tunnelmesh-cni added to the plugin chain of {}", target);
  return absl::OkStatus();
}

absl::Status Uninstall(const InstallOptions& options) {
  absl::Status result;
  for (const std::string& name : ConfigFiles(options.conf_dir)) {
    const std::string path = options.conf_dir + "/" + name;
    absl::StatusOr<json> config = ReadConfig(path);
    if (!config.ok()) continue;  // Not ours to judge.
    json cleaned = WithoutPlugin(*config);
    if (cleaned == *config) continue;
    if (absl::Status s = WriteConfig(path, cleaned); !s.ok()) {
      result.Update(s);
      continue;
    }
    TM_LOG_INFO("tunnelmesh-cni removed from the plugin chain of {}", path);
  }
  const std::string binary = options.bin_dir + "/" + kPluginType;
  if (unlink(binary.c_str()) != 0 && errno != ENOENT) {
    result.Update(absl::InternalError("removing " + binary + ": " + std::strerror(errno)));
  }
  return result;
}

absl::Status InstallAndWatch(const InstallOptions& options, const std::atomic<bool>& stop,
                             int interval_ms) {
  std::string last_error;
  while (!stop.load()) {
    absl::Status s = Install(options);
    if (!s.ok() && std::string(s.message()) != last_error) {
      TM_LOG_WARN("installing tunnelmesh-cni (retrying): {}", std::string(s.message()));
    }
    last_error = s.ok() ? "" : std::string(s.message());
    for (int waited = 0; waited < interval_ms && !stop.load(); waited += 100) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return Uninstall(options);
}

}  // namespace tunnelmesh::cni
