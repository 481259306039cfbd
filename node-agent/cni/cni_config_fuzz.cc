// Fuzz target: the network configuration (with prevResult, written by the previous plugin in the
// chain) reaches tunnelmesh-cni on stdin. The parser must never crash, and whatever it accepts must
// convert to every supported result version and back without losing an address.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "lib/base/testing/json_shaper.h"
#include "nlohmann/json.hpp"
#include "node-agent/cni/plugin_config.h"

namespace {

using nlohmann::json;

// Bytes that are not JSON become edits of a valid chained configuration.
json Shaped(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kPaths = {
      "/cniVersion",
      "/name",
      "/type",
      "/mesh",
      "/agentSocket",
      "/podInterface",
      "/prevResult",
      "/prevResult/cniVersion",
      "/prevResult/interfaces",
      "/prevResult/interfaces/0",
      "/prevResult/interfaces/0/name",
      "/prevResult/ips",
      "/prevResult/ips/0",
      "/prevResult/ips/0/address",
      "/prevResult/ips/0/version",
      "/prevResult/ips/0/interface",
      "/prevResult/routes",
      "/prevResult/routes/0",
      "/prevResult/dns",
      "/cni.dev~1valid-attachments",
      "/cni.dev~1valid-attachments/0",
      "/cni.dev~1valid-attachments/0/containerID",
  };
  json config = json::parse(R"({
    "cniVersion": "1.1.0", "name": "pods", "type": "tunnelmesh-cni", "mesh": "demo",
    "agentSocket": "/var/lib/tunnelmesh/tm0.sock", "podInterface": "mesh0",
    "prevResult": {"cniVersion": "1.1.0",
                   "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/p"}],
                   "ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 0}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {}},
    "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
  })");
  return tunnelmesh::testing::ShapeJson(config, kPaths, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tunnelmesh::cni;
  std::string text(reinterpret_cast<const char*>(data), size);
  json object = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) {
    text = Shaped(data, size).dump(-1, ' ', false, json::error_handler_t::ignore);
  }
  for (const char* command : {"ADD", "GC", "VERSION"}) {
    absl::StatusOr<NetworkConfig> config = ParseNetworkConfig(text, command);
    if (!config.ok()) {
      // Every refusal is a CNI error with a known code and a message.
      const int code = CniErrorCode(config.status());
      if (code != kCniErrorDecode && code != kCniErrorInvalidConfig &&
          code != kCniErrorIncompatibleVersion) {
        std::abort();
      }
      if (config.status().message().empty()) std::abort();
      continue;
    }
    if (std::string(command) == "VERSION") continue;
    PodResult ours;
    ours.interface_name = config->pod_interface;
    ours.addresses = {"10.99.0.9"};
    ours.routes = {"10.99.0.0/16"};
    for (const std::string& version : SupportedVersions()) {
      json result = BuildResult(version, config->prev_result, &ours);
      const size_t prev_ips =
          config->prev_result.has_value() && config->prev_result->contains("ips")
              ? (*config->prev_result)["ips"].size()
              : 0;
      if (!result.contains("ips") || result["ips"].size() != prev_ips + 1) std::abort();
      // Converting back to the configuration's version keeps every address.
      json back = BuildResult(config->cni_version, result, nullptr);
      if (back["ips"].size() != result["ips"].size()) std::abort();
    }
  }
  return 0;
}
