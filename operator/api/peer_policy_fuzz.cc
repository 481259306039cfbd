// Fuzz target: PeerPolicy objects come from the cluster (anyone allowed to write PeerPolicies) and
// the parser must never crash on them, whatever the JSON shape. Whatever parses must parse again
// to the same spec after a round trip through the object's text.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "lib/base/testing/json_shaper.h"
#include "nlohmann/json.hpp"
#include "operator/api/peer_policy.h"

namespace {

// Bytes that are not JSON become edits of a valid policy, so that the deeper checks run.
nlohmann::json Shaped(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kPaths = {
      "/spec/mesh",
      "/spec/action",
      "/spec/from",
      "/spec/from/0",
      "/spec/from/0/peerSelector",
      "/spec/from/0/peerSelector/matchLabels",
      "/spec/from/0/peerSelector/matchLabels/k",
      "/spec/to/0/podSelector",
      "/spec/to/0/namespaceSelector",
      "/spec/to/0/podSelector/matchExpressions",
      "/spec/to/0/podSelector/matchExpressions/0",
      "/spec/to/0/podSelector/matchExpressions/0/key",
      "/spec/to/0/podSelector/matchExpressions/0/operator",
      "/spec/to/0/podSelector/matchExpressions/0/values",
      "/spec/to/0/podSelector/matchExpressions/0/values/0",
      "/spec/ports",
      "/spec/ports/0",
      "/spec/ports/0/protocol",
      "/spec/ports/0/port",
      "/spec/ports/0/endPort",
      "/metadata",
      "/metadata/name",
      "/spec"};
  nlohmann::json policy = {
      {"metadata", {{"name", "p"}}},
      {"spec",
       {{"mesh", "default"},
        {"action", "Allow"},
        {"from", {{{"peerSelector", {{"matchLabels", {{"k", "v"}}}}}}}},
        {"to",
         {{{"podSelector",
            {{"matchExpressions", {{{"key", "app"}, {"operator", "In"}, {"values", {"db"}}}}}}}}}},
        {"ports", {{{"protocol", "TCP"}, {"port", 80}, {"endPort", 90}}}}}}};
  return tunnelmesh::testing::ShapeJson(policy, kPaths, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json object =
      nlohmann::json::parse(std::string(reinterpret_cast<const char*>(data), size), nullptr,
                            /*allow_exceptions=*/false);
  if (object.is_discarded()) object = Shaped(data, size);
  auto first = tunnelmesh::ParsePeerPolicy(object);
  if (!first.ok()) return 0;
  // Strings that are not UTF-8 (possible only in shaped input) have no JSON text to round-trip.
  const std::string text = object.dump(-1, ' ', false, nlohmann::json::error_handler_t::ignore);
  nlohmann::json reparsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (reparsed.is_discarded() || reparsed != object) return 0;
  auto second = tunnelmesh::ParsePeerPolicy(reparsed);
  if (!second.ok() || !(*first == *second)) std::abort();
  return 0;
}
