// Fuzz target: PeerPolicy objects come from the cluster (anyone allowed to write PeerPolicies) and
// the parser must never crash on them, whatever the JSON shape. Whatever parses must parse again
// to the same spec after a round trip through the object's text.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "nlohmann/json.hpp"
#include "operator/coordinator/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json object =
      nlohmann::json::parse(std::string(reinterpret_cast<const char*>(data), size), nullptr,
                            /*allow_exceptions=*/false);
  if (object.is_discarded()) return 0;
  auto first = tunnelmesh::ParsePeerPolicy(object);
  if (!first.ok()) return 0;
  auto second = tunnelmesh::ParsePeerPolicy(nlohmann::json::parse(object.dump()));
  if (!second.ok() || !(*first == *second)) std::abort();
  return 0;
}
