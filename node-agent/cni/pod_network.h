// The pod's mesh interfaces, made over rtnetlink (libnl-route-3) without running `ip`: a veth
// pair whose host end (HostInterfaceName) stays in the host's network namespace and whose pod end
// (podInterface, e.g. mesh0) moves into the pod's. The pod end carries the pod's mesh addresses as
// /32 and /128 and routes for the mesh's ranges only (IPv4 on-link, answered by proxy ARP on the
// host end; IPv6 via fe80::1, the host end's address); the host routes each pod address to the host
// end. Nothing here changes the pod's default route.
//
// Enters the pod's namespace with setns(2) on the calling thread: call it from a single-threaded
// process (the plugin), never from the agent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/net/ip.h"

namespace tunnelmesh::cni {

struct PodNetworkSpec {
  std::string netns;           // the pod's namespace path (CNI_NETNS)
  std::string host_interface;  // HostInterfaceName(container ID)
  std::string pod_interface;   // podInterface
  uint32_t mtu = 0;            // 0: the kernel's default
  std::vector<IpAddress> addresses;
  std::vector<Prefix> routes;
};

// Whether the host forwards the families in `addresses` (net.ipv4.ip_forward,
// net.ipv6.conf.all.forwarding); the error names the sysctl to set.
[[nodiscard]] absl::Status CheckForwarding(const std::vector<IpAddress>& addresses);

// Makes the interfaces, addresses and routes. A host end left by an earlier ADD of the same
// container is removed first (a repeated ADD makes the same state again). An interface of that name
// already in the pod is an error naming podInterface. Returns the pod end's MAC address. On failure
// the host end (and with it the pod end) is removed again.
[[nodiscard]] absl::StatusOr<std::string> CreatePodNetwork(const PodNetworkSpec& spec);

// Removes the host end (the kernel removes the pod end and the routes with it). An interface that
// is already gone is success.
[[nodiscard]] absl::Status DeleteHostInterface(const std::string& host_interface);

// The host end exists, the pod end exists in `spec.netns`, is up and carries every address in
// `spec.addresses`; errors name what is missing.
[[nodiscard]] absl::Status CheckPodNetwork(const PodNetworkSpec& spec);

// The names of the host ends of pod veths in the host namespace ("tmp" and 12 hex digits).
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ListHostInterfaces();

}  // namespace tunnelmesh::cni
