// Fuzz target: objects from the cluster that the operator reads (anyone allowed to write Meshes,
// MeshPeers or Secrets can put anything in them that the schema lets through, and the schema is
// not checked when CRDs are installed without it). They arrive as JSON, and the Mesh and Secret
// parser sees them as the JSON text the operator gives it (standalone manifests are the admin's
// own files). Neither the MeshPeer conversion nor that parser may crash; an admitted MeshPeer must
// convert back to an object that reads as the same record.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lib/base/testing/json_shaper.h"
#include "nlohmann/json.hpp"
#include "operator/api/mesh.h"
#include "operator/store/meshpeer_store.h"

namespace {

// Random bytes are rarely JSON: bytes that are not become edits of a well-formed MeshPeer, Mesh
// or Secret, so that the field checks run.
nlohmann::json Shaped(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kPaths = {"/spec/publicKey",
                                                  "/spec/mesh",
                                                  "/spec/kind",
                                                  "/spec/endpoints",
                                                  "/spec/endpoints/0",
                                                  "/status/meshIPs",
                                                  "/status/meshIPs/0",
                                                  "/metadata/labels",
                                                  "/metadata/labels/a",
                                                  "/metadata/name",
                                                  "/spec/ipv4CIDR",
                                                  "/spec/ipv6CIDR",
                                                  "/spec/joinTokenSecretRef",
                                                  "/spec/joinTokenSecretRef/key",
                                                  "/spec/domain",
                                                  "/metadata",
                                                  "/spec",
                                                  "/status",
                                                  "/data/token",
                                                  "/kind"};
  // Unknown fields are refused before the deeper checks, so each kind gets only its own spec.
  const bool mesh = size > 0 && (data[0] & 1);
  nlohmann::json spec =
      mesh ? nlohmann::json{{"ipv4CIDR", "10.99.0.0/16"},
                            {"ipv6CIDR", "fd99:99::/48"},
                            {"domain", "mesh"},
                            {"joinTokenSecretRef", {{"namespace", "tm"}, {"name", "t"}}}}
           : nlohmann::json{{"mesh", "default"},
                            {"kind", "External"},
                            {"publicKey", "q0qlR7yV+2Wv4bNl8XWRSxOcSxPAxr8iwQqU3PjHDVs="},
                            {"endpoints", {"192.0.2.1:51820"}}};
  nlohmann::json object = {{"apiVersion", "tunnelmesh.io/v1alpha1"},
                           {"kind", mesh ? "Mesh" : "MeshPeer"},
                           {"metadata", {{"name", "m"}, {"labels", {{"a", "b"}}}}},
                           {"spec", std::move(spec)},
                           {"status", {{"meshIPs", {"10.99.0.1"}}}}};
  if (!mesh) object["data"] = {{"token", "YWJjZGVmZ2hpamtsbW5vcHFyc3Q="}};
  return size == 0 ? object : tunnelmesh::testing::ShapeJson(object, kPaths, data + 1, size - 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json object = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) object = Shaped(data, size);
  std::vector<tunnelmesh::MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  (void)tunnelmesh::ParseManifestText(
      object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "fuzz", &meshes,
      &secrets);
  if (!object.is_object()) return 0;
  secrets.clear();
  object["kind"] = "Secret";
  // As a Secret: without the fields a Secret has not, so that its data is read.
  nlohmann::json secret = object;
  secret.erase("spec");
  secret.erase("status");
  (void)tunnelmesh::ParseManifestText(
      secret.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "fuzz", &meshes,
      &secrets);
  auto record = tunnelmesh::MeshPeerToRecord(object);
  if (!record.ok()) return 0;
  nlohmann::json again = tunnelmesh::MeshPeerFor(*record);
  nlohmann::json ips = nlohmann::json::array();
  for (const auto& ip : record->mesh_ips) ips.push_back(ip.ToString());
  again["status"]["meshIPs"] = ips;
  auto back = tunnelmesh::MeshPeerToRecord(again);
  if (!back.ok() || !(*back == *record)) std::abort();
  return 0;
}
