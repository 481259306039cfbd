#include "node-agent/cni/attach_protocol.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "lib/crypto/blake2s.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;

// The string at `key`, "" when absent; an error naming the key when it is not a string.
absl::Status ReadString(const json& object, const char* key, std::string* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string())
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be a string"));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadStrings(const json& object, const char* key, std::vector<std::string>* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array())
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be a list"));
  for (const json& item : *it) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must list strings"));
    }
    out->push_back(item.get<std::string>());
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseObject(std::string_view text) {
  json object = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded() || !object.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  return object;
}

}  // namespace

std::string HostInterfaceName(std::string_view container_id) {
  uint8_t hash[kHashSize];
  Blake2s({Bytes(reinterpret_cast<const uint8_t*>(container_id.data()), container_id.size())},
          hash);
  std::string name = "tmp";
  for (int i = 0; i < 6; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", hash[i]);
    name += hex;
  }
  return name;
}

std::string EncodeRequest(const AttachRequest& request) {
  json object = {{"command", request.command},          {"mesh", request.mesh},
                 {"containerId", request.container_id}, {"netns", request.netns},
                 {"ifName", request.if_name},           {"podNamespace", request.pod_namespace},
                 {"podName", request.pod_name},         {"podUid", request.pod_uid}};
  if (!request.valid_attachments.empty()) {
    json list = json::array();
    for (const Attachment& a : request.valid_attachments) {
      list.push_back({{"containerId", a.container_id}, {"ifName", a.if_name}});
    }
    object["validAttachments"] = std::move(list);
  }
  return std::string(kRequestPrefix) + object.dump();
}

absl::StatusOr<AttachRequest> DecodeRequest(std::string_view text) {
  absl::StatusOr<json> object = ParseObject(text);
  if (!object.ok()) return absl::InvalidArgumentError("cni request: not a JSON object");
  AttachRequest request;
  for (auto [key, out] : {std::pair{"command", &request.command},
                          {"mesh", &request.mesh},
                          {"containerId", &request.container_id},
                          {"netns", &request.netns},
                          {"ifName", &request.if_name},
                          {"podNamespace", &request.pod_namespace},
                          {"podName", &request.pod_name},
                          {"podUid", &request.pod_uid}}) {
    if (absl::Status s = ReadString(*object, key, out); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("cni request: ", s.message()));
    }
  }
  if (auto it = object->find("validAttachments"); it != object->end() && !it->is_null()) {
    if (!it->is_array()) {
      return absl::InvalidArgumentError("cni request: \"validAttachments\" must be a list");
    }
    for (const json& item : *it) {
      Attachment attachment;
      if (!item.is_object() || !ReadString(item, "containerId", &attachment.container_id).ok() ||
          !ReadString(item, "ifName", &attachment.if_name).ok()) {
        return absl::InvalidArgumentError(
            "cni request: \"validAttachments\" must list {\"containerId\", \"ifName\"} objects");
      }
      request.valid_attachments.push_back(std::move(attachment));
    }
  }
  return request;
}

std::string EncodeResponse(const AttachResponse& response) {
  if (response.failed()) {
    return json{{"error",
                 {{"code", response.error.code},
                  {"msg", response.error.msg},
                  {"details", response.error.details}}}}
        .dump();
  }
  return json{{"attached", response.attached},
              {"reason", response.reason},
              {"name", response.name},
              {"hostInterface", response.host_interface},
              {"addresses", response.addresses},
              {"routes", response.routes},
              {"mtu", response.mtu}}
      .dump();
}

absl::StatusOr<AttachResponse> DecodeResponse(std::string_view text) {
  absl::StatusOr<json> object = ParseObject(text);
  if (!object.ok()) return absl::InvalidArgumentError("the agent's answer is not a JSON object");
  AttachResponse response;
  if (auto it = object->find("error"); it != object->end()) {
    // The agent's generic errors are plain strings ({"error": "unknown request"}).
    if (it->is_string()) {
      response.error = {kCniErrorAttachFailed, it->get<std::string>(), ""};
      return response;
    }
    if (!it->is_object() || !it->contains("code") || !(*it)["code"].is_number_integer()) {
      return absl::InvalidArgumentError("the agent's error has no numeric \"code\"");
    }
    response.error.code = (*it)["code"].get<int>();
    if (!ReadString(*it, "msg", &response.error.msg).ok() ||
        !ReadString(*it, "details", &response.error.details).ok()) {
      return absl::InvalidArgumentError(
          "the agent's error has a non-string \"msg\" or \"details\"");
    }
    if (response.error.code == 0) response.error.code = kCniErrorAttachFailed;
    return response;
  }
  if (auto it = object->find("attached"); it != object->end()) {
    if (!it->is_boolean()) return absl::InvalidArgumentError("\"attached\" must be true or false");
    response.attached = it->get<bool>();
  }
  for (auto [key, out] : {std::pair{"reason", &response.reason},
                          {"name", &response.name},
                          {"hostInterface", &response.host_interface}}) {
    if (absl::Status s = ReadString(*object, key, out); !s.ok()) return s;
  }
  if (absl::Status s = ReadStrings(*object, "addresses", &response.addresses); !s.ok()) return s;
  if (absl::Status s = ReadStrings(*object, "routes", &response.routes); !s.ok()) return s;
  if (auto it = object->find("mtu"); it != object->end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 65535) {
      return absl::InvalidArgumentError("\"mtu\" must be a number from 0 to 65535");
    }
    response.mtu = static_cast<uint32_t>(it->get<uint64_t>());
  }
  return response;
}

AttachResponse ErrorResponse(int code, std::string msg, std::string details) {
  AttachResponse response;
  response.error = {code, std::move(msg), std::move(details)};
  return response;
}

}  // namespace tunnelmesh::cni
