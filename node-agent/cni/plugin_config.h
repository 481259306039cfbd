// What tunnelmesh-cni reads and writes, without any I/O: the runtime's environment variables
// (CNI_COMMAND, CNI_CONTAINERID, ...), the network configuration on stdin (with the previous
// plugin's result, prevResult), the result it prints, and CNI errors. CNI specification 1.1,
// sections "Parameters", "Network configuration", "Result types" and "Error".
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "node-agent/cni/attach_protocol.h"

namespace tunnelmesh::cni {

inline constexpr char kPluginType[] = "tunnelmesh-cni";
// The default agent's control socket (kDefaultStateDir, interface tm0).
inline constexpr std::string_view kDefaultAgentSocket = "/var/lib/tunnelmesh/tm0.sock";
inline constexpr std::string_view kDefaultPodInterface = "mesh0";
// The host end's IPv6 address: the pod's IPv6 routes point at it (design: neighbour resolution).
inline constexpr std::string_view kHostLinkLocal = "fe80::1";

// The CNI versions this plugin speaks, oldest first.
const std::vector<std::string>& SupportedVersions();
bool IsSupportedVersion(std::string_view version);

// A CNI error as an absl::Status: the CNI code and details travel as payloads. The status code is
// derived from the CNI code (kInvalidArgument for 4, 6, 7; kUnavailable for 11, 50, 100; ...).
absl::Status CniError(int code, absl::string_view msg, absl::string_view details = "");
// The CNI code of `status`: its payload, or one chosen from its status code for errors that did
// not come through CniError (kInvalidArgument -> 7, otherwise 103).
int CniErrorCode(const absl::Status& status);
std::string CniErrorDetails(const absl::Status& status);
// {"cniVersion", "code", "msg", "details"} (CNI spec "Error"); `cni_version` defaults to the
// newest supported one when empty.
std::string EncodeError(std::string_view cni_version, const absl::Status& status);

// The runtime's environment. Every command but VERSION, GC and STATUS needs CNI_CONTAINERID and
// CNI_IFNAME; ADD and CHECK also CNI_NETNS.
struct Environment {
  std::string command;  // ADD, DEL, CHECK, GC, STATUS or VERSION
  std::string container_id;
  std::string netns;
  std::string if_name;
  std::string path;
  // From CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID). Without K8S_POD_NAME (outside
  // Kubernetes) the pod is named after the first 12 characters of the container ID, in namespace
  // "default".
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;
};

// Returns the variable's value, or nullptr when unset (std::getenv's contract).
using Getenv = std::function<const char*(const char*)>;
// Errors are CNI code 4 (invalid environment) naming the variable; an unknown CNI_COMMAND is code 4
// too. Unknown CNI_ARGS keys are ignored, as with IgnoreUnknown=1.
[[nodiscard]] absl::StatusOr<Environment> ParseEnvironment(const Getenv& getenv);

struct NetworkConfig {
  std::string cni_version;
  std::string name;
  std::string mesh;  // may be empty: the agent's mesh
  std::string agent_socket = std::string(kDefaultAgentSocket);
  std::string pod_interface = std::string(kDefaultPodInterface);
  std::optional<nlohmann::json> prev_result;
  // GC: "cni.dev/valid-attachments" ({"containerID", "ifname"} objects).
  std::vector<Attachment> valid_attachments;
};

// Parses the configuration on stdin for `command`. Errors: code 6 (not JSON), code 7 naming the
// field (missing name, wrong type, a bad agentSocket or podInterface, a malformed prevResult), code
// 1 (a cniVersion this plugin does not speak; VERSION accepts any).
[[nodiscard]] absl::StatusOr<NetworkConfig> ParseNetworkConfig(std::string_view text,
                                                               std::string_view command);

// {"cniVersion", "supportedVersions"} for VERSION.
std::string EncodeVersionResult(std::string_view cni_version);

// What the plugin adds to the result for an attached pod.
struct PodResult {
  std::string interface_name;  // podInterface
  std::string mac;
  std::string sandbox;                 // the netns path
  std::vector<std::string> addresses;  // "10.99.0.9", "fd99::9" (become /32 and /128)
  std::vector<std::string> routes;     // the mesh's ranges
  uint32_t mtu = 0;
};

// The result for `cni_version`: prevResult converted to that version's shape (0.4.0 lists each IP
// with "version"; 1.x does not), then, when `ours` is set, the pod interface appended with our
// addresses (their "interface" index pointing at it) and routes (IPv6 through fe80::1). Without
// prevResult the result holds only ours (or nothing). prevResult was checked by ParseNetworkConfig.
nlohmann::json BuildResult(std::string_view cni_version,
                           const std::optional<nlohmann::json>& prev_result, const PodResult* ours);

// Whether `name` can be a Linux interface name (1-15 bytes, no '/', ':', whitespace; not "." or
// "..").
bool IsValidInterfaceName(std::string_view name);

}  // namespace tunnelmesh::cni
