// Puts tunnelmesh-cni into a node's CNI configuration and takes it out again (the chart's
// `cni-installer` container when cni.enabled=true, docs/pods.md). The runtime uses the first
// network configuration in its conf dir (by file name); the installer appends a
// {"type": "tunnelmesh-cni", ...} entry to that file's plugin chain, after the primary plugin, and
// copies the plugin binary into the bin dir. It keeps watching: a primary CNI that rewrites its
// file gets the entry again. On SIGTERM it removes the entry and the binary.
#pragma once

#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh::cni {

inline constexpr char kPluginType[] = "tunnelmesh-cni";

struct InstallOptions {
  std::string conf_dir = "/etc/cni/net.d";
  std::string bin_dir = "/opt/cni/bin";
  // The plugin entry's fields (see the plugin's config): "mesh", "agentSocket", "podInterface".
  std::string mesh;
  std::string agent_socket;
  std::string pod_interface;
  // The binary copied into bin_dir as tunnelmesh-cni (default: this program).
  std::string binary = "/proc/self/exe";
};

// The plugin entry the installer adds.
nlohmann::json PluginEntry(const InstallOptions& options);

// `config` (a .conflist, or a single-plugin .conf, which becomes a chain) with `entry` last in its
// chain; an older tunnelmesh-cni entry is replaced. Errors name what is wrong with the file.
[[nodiscard]] absl::StatusOr<nlohmann::json> WithPlugin(const nlohmann::json& config,
                                                        const nlohmann::json& entry);
// `config` without tunnelmesh-cni entries.
nlohmann::json WithoutPlugin(const nlohmann::json& config);
// Whether `config` holds a tunnelmesh-cni entry equal to `entry`.
bool HasPlugin(const nlohmann::json& config, const nlohmann::json& entry);

// The network configuration file the runtime uses: the first *.conflist, *.conf or *.json of
// `conf_dir` by name. NOT_FOUND (naming the dir and what the primary CNI should do) when none.
[[nodiscard]] absl::StatusOr<std::string> PrimaryConfig(const std::string& conf_dir);

// Copies the binary, then puts the entry into the primary configuration (written atomically; a
// .conf becomes NAME.conflist and the .conf is removed). Idempotent.
[[nodiscard]] absl::Status Install(const InstallOptions& options);
// Takes the entry out of every configuration in conf_dir and removes the binary. Idempotent.
[[nodiscard]] absl::Status Uninstall(const InstallOptions& options);

// Install, then every `interval` make sure the entry is still there, until `stop`; then Uninstall.
// Errors while watching are logged and retried.
[[nodiscard]] absl::Status InstallAndWatch(const InstallOptions& options,
                                           const std::atomic<bool>& stop, int interval_ms = 2000);

}  // namespace tunnelmesh::cni
