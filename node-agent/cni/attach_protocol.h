// What tunnelmesh-cni and the node's agent say to each other over the agent's control socket
// (node-agent/control/control_socket.h): one request line "cni JSON", one JSON response. The
// plugin never talks to the coordinator or the API server; the agent asks the coordinator for the
// pod's addresses, keeps what it attached on disk, and garbage-collects what the runtime forgot.
// The plugin makes the interfaces (it runs where the runtime runs, with the pod's netns path).
//
// Request: {"command": "ADD"|"DEL"|"CHECK"|"GC"|"STATUS", "mesh": "NAME" (may be empty: the
// agent's), "containerId", "netns", "ifName", "podNamespace", "podName", "podUid",
// "validAttachments": [{"containerId", "ifName"}] (GC only)}.
// Response: {"attached": bool, "reason", "name", "hostInterface", "addresses": ["10.99.0.9"],
// "routes": ["10.99.0.0/16"], "mtu": 1420}, or {"error": {"code": N, "msg", "details"}} with a CNI
// error code (kCniError*).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tunnelmesh::cni {

// CNI error codes (CNI spec, "Error"): the well-known ones, and ours from 100 up.
inline constexpr int kCniErrorIncompatibleVersion = 1;
inline constexpr int kCniErrorUnsupportedField = 2;
inline constexpr int kCniErrorUnknownContainer = 3;
inline constexpr int kCniErrorInvalidEnvironment = 4;
inline constexpr int kCniErrorIo = 5;
inline constexpr int kCniErrorDecode = 6;
inline constexpr int kCniErrorInvalidConfig = 7;
inline constexpr int kCniErrorTryLater = 11;
inline constexpr int kCniErrorNotAvailable = 50;
inline constexpr int kCniErrorAgentUnreachable = 100;
inline constexpr int kCniErrorMeshUnknown = 101;
inline constexpr int kCniErrorOutOfAddresses = 102;
inline constexpr int kCniErrorAttachFailed = 103;

// The control-socket request prefix.
inline constexpr std::string_view kRequestPrefix = "cni ";

struct Attachment {
  std::string container_id;
  std::string if_name;
  bool operator==(const Attachment&) const = default;
};

struct AttachRequest {
  std::string command;  // ADD, DEL, CHECK, GC or STATUS.
  std::string mesh;
  std::string container_id;
  std::string netns;
  std::string if_name;
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;
  std::vector<Attachment> valid_attachments;
  bool operator==(const AttachRequest&) const = default;
};

struct AttachError {
  int code = 0;
  std::string msg;
  std::string details;
  bool operator==(const AttachError&) const = default;
};

struct AttachResponse {
  // Set: the request failed (the plugin returns it in the CNI error format).
  AttachError error;
  bool attached = false;
  std::string reason;                  // Why not attached (e.g. not opted in).
  std::string name;                    // "<pod>.<namespace>.pod"
  std::string host_interface;          // HostInterfaceName(container_id)
  std::vector<std::string> addresses;  // Mesh IPs, e.g. "10.99.0.9", "fd99::9".
  std::vector<std::string> routes;     // The mesh's ranges, e.g. "10.99.0.0/16".
  uint32_t mtu = 0;
  bool failed() const { return error.code != 0; }
  bool operator==(const AttachResponse&) const = default;
};

// The host end of a pod's mesh veth: "tmp" and 12 hex digits of a hash of the container ID (15
// characters, the kernel's limit). The agent finds attachments whose pod is gone by it.
std::string HostInterfaceName(std::string_view container_id);

// "cni " + JSON, one line.
std::string EncodeRequest(const AttachRequest& request);
// The JSON after the prefix; errors name the field.
[[nodiscard]] absl::StatusOr<AttachRequest> DecodeRequest(std::string_view json);
std::string EncodeResponse(const AttachResponse& response);
[[nodiscard]] absl::StatusOr<AttachResponse> DecodeResponse(std::string_view json);
// A response carrying only an error.
AttachResponse ErrorResponse(int code, std::string msg, std::string details = "");

}  // namespace tunnelmesh::cni
