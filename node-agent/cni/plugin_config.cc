#include "node-agent/cni/plugin_config.h"

#include <cctype>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/net/ip.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;

// Debian's abseil has its own string_view; the headers speak std::string_view.
absl::string_view Sv(std::string_view text) { return absl::string_view(text.data(), text.size()); }

constexpr std::string_view kCodePayload = "type.tunnelmesh.io/cni.code";
constexpr std::string_view kDetailsPayload = "type.tunnelmesh.io/cni.details";

absl::StatusCode StatusCodeFor(int code) {
  switch (code) {
    case kCniErrorInvalidEnvironment:
    case kCniErrorDecode:
    case kCniErrorInvalidConfig:
    case kCniErrorUnsupportedField:
      return absl::StatusCode::kInvalidArgument;
    case kCniErrorIncompatibleVersion:
      return absl::StatusCode::kUnimplemented;
    case kCniErrorUnknownContainer:
    case kCniErrorMeshUnknown:
      return absl::StatusCode::kNotFound;
    case kCniErrorTryLater:
    case kCniErrorNotAvailable:
    case kCniErrorAgentUnreachable:
      return absl::StatusCode::kUnavailable;
    case kCniErrorOutOfAddresses:
      return absl::StatusCode::kResourceExhausted;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status ConfigError(std::string_view field, std::string_view problem) {
  return CniError(kCniErrorInvalidConfig,
                  absl::StrCat("network configuration: \"", Sv(field), "\" ", Sv(problem)));
}

// The string at `key`: `fallback` when absent, an error naming the key when not a string.
absl::Status ReadConfigString(const json& object, std::string_view key, std::string* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return ConfigError(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

bool IsValidContainerId(std::string_view id) {
  // CNI spec "Parameters": alphanumeric, underscore, period and hyphen; starts alphanumeric.
  if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

// "10.0.0.5/24" -> address and length; errors name `field`.
absl::Status CheckCidr(const json& value, const std::string& field) {
  if (!value.is_string()) return ConfigError(field, "must be a string like \"10.1.0.5/24\"");
  const std::string text = value.get<std::string>();
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(text, '/');
  absl::StatusOr<IpAddress> address =
      IpAddress::Parse(std::string_view(parts.first.data(), parts.first.size()));
  int length = -1;
  if (!address.ok() || !absl::SimpleAtoi(parts.second, &length) || length < 0 ||
      length > address->bit_length()) {
    return ConfigError(field,
                       absl::StrCat("is not an address with a prefix length: \"", text, "\""));
  }
  return absl::OkStatus();
}

// prevResult is the previous plugin's result in this configuration's version (the runtime
// converts it); only the parts we rewrite are checked.
absl::Status CheckPrevResult(const json& result) {
  if (!result.is_object()) return ConfigError("prevResult", "must be an object");
  for (const char* key : {"interfaces", "ips", "routes"}) {
    auto it = result.find(key);
    if (it == result.end() || it->is_null()) continue;
    if (!it->is_array()) return ConfigError(absl::StrCat("prevResult.", key), "must be a list");
    for (size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_object()) {
        return ConfigError(absl::StrCat("prevResult.", key, "[", i, "]"), "must be an object");
      }
    }
  }
  if (auto ips = result.find("ips"); ips != result.end() && ips->is_array()) {
    for (size_t i = 0; i < ips->size(); ++i) {
      const json& ip = (*ips)[i];
      const std::string field = absl::StrCat("prevResult.ips[", i, "].address");
      if (!ip.contains("address")) return ConfigError(field, "is missing");
      if (absl::Status s = CheckCidr(ip["address"], field); !s.ok()) return s;
      if (auto index = ip.find("interface"); index != ip.end() && !index->is_number_unsigned()) {
        return ConfigError(absl::StrCat("prevResult.ips[", i, "].interface"),
                           "must be an index into prevResult.interfaces");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ReadValidAttachments(const json& config, std::vector<Attachment>* out) {
  constexpr std::string_view kKey = "cni.dev/valid-attachments";
  auto it = config.find(kKey);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return ConfigError(kKey, "must be a list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& item = (*it)[i];
    const std::string field = absl::StrCat(Sv(kKey), "[", i, "]");
    if (!item.is_object() || !item.contains("containerID") || !item["containerID"].is_string() ||
        !item.contains("ifname") || !item["ifname"].is_string()) {
      return ConfigError(field, "must be an object with string \"containerID\" and \"ifname\"");
    }
    out->push_back({item["containerID"].get<std::string>(), item["ifname"].get<std::string>()});
  }
  return absl::OkStatus();
}

bool IsIpv6Cidr(const std::string& cidr) { return cidr.find(':') != std::string::npos; }

}  // namespace

const std::vector<std::string>& SupportedVersions() {
  static const auto* versions = new std::vector<std::string>{"0.4.0", "1.0.0", "1.1.0"};
  return *versions;
}

bool IsSupportedVersion(std::string_view version) {
  for (const std::string& v : SupportedVersions()) {
    if (v == version) return true;
  }
  return false;
}

absl::Status CniError(int code, absl::string_view msg, absl::string_view details) {
  absl::Status status(StatusCodeFor(code), msg);
  status.SetPayload(Sv(kCodePayload), absl::Cord(absl::StrCat(code)));
  if (!details.empty()) status.SetPayload(Sv(kDetailsPayload), absl::Cord(details));
  return status;
}

int CniErrorCode(const absl::Status& status) {
  if (auto payload = status.GetPayload(Sv(kCodePayload))) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*payload), &code) && code != 0) return code;
  }
  return status.code() == absl::StatusCode::kInvalidArgument ? kCniErrorInvalidConfig
                                                             : kCniErrorAttachFailed;
}

std::string CniErrorDetails(const absl::Status& status) {
  auto payload = status.GetPayload(Sv(kDetailsPayload));
  return payload ? std::string(*payload) : std::string();
}

std::string EncodeError(std::string_view cni_version, const absl::Status& status) {
  json error = {
      {"cniVersion", cni_version.empty() ? SupportedVersions().back() : std::string(cni_version)},
      {"code", CniErrorCode(status)},
      {"msg", std::string(status.message())}};
  if (std::string details = CniErrorDetails(status); !details.empty()) error["details"] = details;
  return error.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool IsValidInterfaceName(std::string_view name) {
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || c == '\0') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<Environment> ParseEnvironment(const Getenv& getenv) {
  auto get = [&](const char* name) {
    const char* value = getenv(name);
    return value == nullptr ? std::string() : std::string(value);
  };
  Environment env;
  env.command = get("CNI_COMMAND");
  if (env.command.empty()) {
    return CniError(kCniErrorInvalidEnvironment,
                    "CNI_COMMAND is not set: tunnelmesh-cni is a CNI plugin, run by the container "
                    "runtime (ADD, DEL, CHECK, GC, STATUS or VERSION)");
  }
  bool known = false;
  for (const char* command : {"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"}) {
    known = known || env.command == command;
  }
  if (!known) {
    return CniError(kCniErrorInvalidEnvironment,
                    absl::StrCat("CNI_COMMAND \"", env.command,
                                 "\" is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"));
  }
  env.container_id = get("CNI_CONTAINERID");
  env.netns = get("CNI_NETNS");
  env.if_name = get("CNI_IFNAME");
  env.path = get("CNI_PATH");
  const bool per_container = env.command == "ADD" || env.command == "DEL" || env.command == "CHECK";
  if (per_container) {
    if (!IsValidContainerId(env.container_id)) {
      return CniError(kCniErrorInvalidEnvironment,
                      env.container_id.empty()
                          ? "CNI_CONTAINERID is not set"
                          : absl::StrCat("CNI_CONTAINERID \"", env.container_id,
                                         "\" must be letters, digits, '_', '.' and '-', starting "
                                         "with a letter or digit"));
    }
    if (env.if_name.empty()) return CniError(kCniErrorInvalidEnvironment, "CNI_IFNAME is not set");
    if (env.netns.empty() && env.command != "DEL") {
      return CniError(kCniErrorInvalidEnvironment,
                      absl::StrCat("CNI_NETNS is not set (", env.command,
                                   " needs the pod's network "
                                   "namespace path)"));
    }
  }
  // CNI_ARGS: "KEY=VALUE;KEY=VALUE". Keys other than the pod's are ignored.
  const std::string args = get("CNI_ARGS");
  for (absl::string_view pair : absl::StrSplit(args, ';', absl::SkipEmpty())) {
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      return CniError(kCniErrorInvalidEnvironment,
                      absl::StrCat("CNI_ARGS entry \"", pair, "\" is not KEY=VALUE"));
    }
    absl::string_view key = pair.substr(0, eq);
    std::string value(pair.substr(eq + 1));
    if (key == "K8S_POD_NAMESPACE") env.pod_namespace = value;
    if (key == "K8S_POD_NAME") env.pod_name = value;
    if (key == "K8S_POD_UID") env.pod_uid = value;
  }
  if (per_container && env.pod_name.empty()) {
    env.pod_name = env.container_id.substr(0, 12);
    if (env.pod_namespace.empty()) env.pod_namespace = "default";
  }
  if (per_container && env.pod_namespace.empty()) env.pod_namespace = "default";
  return env;
}

absl::StatusOr<NetworkConfig> ParseNetworkConfig(std::string_view text, std::string_view command) {
  json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return CniError(kCniErrorDecode,
                    "the network configuration on stdin is not a JSON object (the runtime passes "
                    "one plugin's entry of the conflist)");
  }
  NetworkConfig result;
  if (absl::Status s = ReadConfigString(config, "cniVersion", &result.cni_version); !s.ok()) {
    return s;
  }
  if (command == "VERSION") return result;
  if (result.cni_version.empty()) return ConfigError("cniVersion", "is missing");
  if (!IsSupportedVersion(result.cni_version)) {
    return CniError(kCniErrorIncompatibleVersion,
                    absl::StrCat("cniVersion \"", result.cni_version,
                                 "\" is not supported by tunnelmesh-cni (supported: ",
                                 absl::StrJoin(SupportedVersions(), ", "), ")"));
  }
  if ((command == "GC" || command == "STATUS") && result.cni_version != "1.1.0") {
    return CniError(kCniErrorIncompatibleVersion,
                    absl::StrCat(Sv(command), " needs cniVersion 1.1.0, the configuration says \"",
                                 result.cni_version, "\""));
  }
  if (absl::Status s = ReadConfigString(config, "name", &result.name); !s.ok()) return s;
  if (result.name.empty()) return ConfigError("name", "is missing (the network's name)");
  std::string type;
  if (absl::Status s = ReadConfigString(config, "type", &type); !s.ok()) return s;
  if (type != kPluginType) {
    return ConfigError("type",
                       absl::StrCat("must be \"", Sv(kPluginType), "\", not \"", type, "\""));
  }
  if (absl::Status s = ReadConfigString(config, "mesh", &result.mesh); !s.ok()) return s;
  if (absl::Status s = ReadConfigString(config, "agentSocket", &result.agent_socket); !s.ok()) {
    return s;
  }
  if (result.agent_socket.empty() || result.agent_socket[0] != '/') {
    return ConfigError("agentSocket",
                       absl::StrCat("must be an absolute path to the agent's control socket, "
                                    "e.g. ",
                                    Sv(kDefaultAgentSocket)));
  }
  if (absl::Status s = ReadConfigString(config, "podInterface", &result.pod_interface); !s.ok()) {
    return s;
  }
  if (!IsValidInterfaceName(result.pod_interface)) {
    return ConfigError("podInterface",
                       absl::StrCat("\"", result.pod_interface,
                                    "\" is not an interface name (1-15 characters, no '/', ':' "
                                    "or spaces)"));
  }
  if (auto it = config.find("prevResult"); it != config.end() && !it->is_null()) {
    if (absl::Status s = CheckPrevResult(*it); !s.ok()) return s;
    result.prev_result = *it;
  }
  if (absl::Status s = ReadValidAttachments(config, &result.valid_attachments); !s.ok()) return s;
  return result;
}

std::string EncodeVersionResult(std::string_view cni_version) {
  return json{{"cniVersion", cni_version.empty() || !IsSupportedVersion(cni_version)
                                 ? SupportedVersions().back()
                                 : std::string(cni_version)},
              {"supportedVersions", SupportedVersions()}}
      .dump();
}

json BuildResult(std::string_view cni_version, const std::optional<json>& prev_result,
                 const PodResult* ours) {
  const bool with_ip_version = cni_version == "0.4.0";
  json result = json::object();
  if (prev_result.has_value()) result = *prev_result;
  result["cniVersion"] = std::string(cni_version);
  if (!result.contains("interfaces") || !result["interfaces"].is_array()) {
    result["interfaces"] = json::array();
  }
  if (!result.contains("ips") || !result["ips"].is_array()) result["ips"] = json::array();
  if (!result.contains("routes") || !result["routes"].is_array()) result["routes"] = json::array();
  for (json& ip : result["ips"]) {
    if (with_ip_version) {
      const std::string address = ip.value("address", "");
      ip["version"] = IsIpv6Cidr(address) ? "6" : "4";
    } else {
      ip.erase("version");
    }
  }
  if (ours != nullptr) {
    json interface = {{"name", ours->interface_name}, {"sandbox", ours->sandbox}};
    if (!ours->mac.empty()) interface["mac"] = ours->mac;
    if (cni_version == "1.1.0" && ours->mtu != 0) interface["mtu"] = ours->mtu;
    const size_t index = result["interfaces"].size();
    result["interfaces"].push_back(std::move(interface));
    for (const std::string& address : ours->addresses) {
      const bool v6 = IsIpv6Cidr(address);
      json ip = {{"address", absl::StrCat(address, v6 ? "/128" : "/32")}, {"interface", index}};
      if (with_ip_version) ip["version"] = v6 ? "6" : "4";
      result["ips"].push_back(std::move(ip));
    }
    for (const std::string& range : ours->routes) {
      json route = {{"dst", range}};
      if (IsIpv6Cidr(range)) route["gw"] = std::string(kHostLinkLocal);
      result["routes"].push_back(std::move(route));
    }
  }
  if (result["interfaces"].empty()) result.erase("interfaces");
  if (result["ips"].empty()) result.erase("ips");
  if (result["routes"].empty()) result.erase("routes");
  return result;
}

}  // namespace tunnelmesh::cni
