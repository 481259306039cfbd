// Fuzz target: the policy compiler's input comes from the cluster (anyone allowed to write
// PeerPolicies) or from manifest files. Arbitrary bytes are read as YAML (JSON is YAML); bytes that
// are not a YAML mapping become edits of a valid policy (json_shaper.h) so that the compiler runs
// on many valid shapes. The policy is parsed and compiled together with a few fixed members of
// every kind; nothing may crash, and whatever compiles must name only the policy given.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "lib/base/testing/json_shaper.h"
#include "operator/api/mesh.h"
#include "operator/api/peer_policy.h"
#include "operator/policy/engine.h"

namespace {

using tunnelmesh::Prefix;
using tunnelmesh::policy::Member;
namespace coord = tunnelmesh::coordinator::v1;

Member Make(const std::string& name, const std::string& ip, coord::MemberKind kind, bool agent,
            const std::string& host) {
  Member m;
  m.name = name;
  m.kind = kind;
  m.labels = {{"role", name}, {"app", "x"}};
  m.addresses = {*Prefix::Parse(ip)};
  m.runs_agent = agent;
  m.host = host;
  m.namespace_name = "ns";
  return m;
}

nlohmann::json Shaped(const uint8_t* data, size_t size) {
  static const std::vector<std::string> kPaths = {
      "/spec/from",
      "/spec/from/0",
      "/spec/from/0/names",
      "/spec/from/0/kinds",
      "/spec/from/0/kinds/0",
      "/spec/from/1/ipBlock/cidr",
      "/spec/from/1/ipBlock/except",
      "/spec/from/1/ipBlock/except/0",
      "/spec/to/0/peerSelector/matchLabels/role",
      "/spec/to/0/peerSelector/matchExpressions/0/operator",
      "/spec/to/0/peerSelector/matchExpressions/0/values/0",
      "/spec/to/1/namespaceSelector",
      "/spec/to/1/podSelector/matchLabels/app",
      "/spec/to",
      "/spec/action",
      "/spec/ports/0/protocol",
      "/spec/ports/0/port",
      "/spec/ports/0/endPort",
      "/spec/ports/1",
      "/spec/ports"};
  nlohmann::json policy = {
      {"metadata", {{"name", "p"}}},
      {"spec",
       {{"mesh", "demo"},
        {"action", "Allow"},
        {"from",
         {{{"names", {"node", "pod"}}, {"kinds", {"Node", "Pod"}}},
          {{"ipBlock", {{"cidr", "10.99.0.0/16"}, {"except", {"10.99.0.8/29"}}}}}}},
        {"to",
         {{{"peerSelector",
            {{"matchLabels", {{"app", "x"}}},
             {"matchExpressions", {{{"key", "role"}, {"operator", "In"}, {"values", {"nas"}}}}}}}},
          {{"namespaceSelector", nlohmann::json::object()},
           {"podSelector", {{"matchLabels", {{"app", "x"}}}}}}}},
        {"ports", {{{"protocol", "TCP"}, {"port", 80}, {"endPort", 90}}}}}}};
  return tunnelmesh::testing::ShapeJson(policy, kPaths, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<nlohmann::json> object =
      tunnelmesh::YamlTextToJson(std::string(reinterpret_cast<const char*>(data), size));
  if (!object.ok() || !object->is_object()) object = Shaped(data, size);
  absl::StatusOr<tunnelmesh::PeerPolicySpec> policy = tunnelmesh::ParsePeerPolicy(*object);
  if (!policy.ok()) return 0;
  tunnelmesh::policy::Engine engine;
  engine.UpsertMember(Make("node", "10.99.0.1/32", coord::MEMBER_KIND_NODE, true, ""));
  engine.UpsertMember(Make("laptop", "fd99::2/128", coord::MEMBER_KIND_EXTERNAL, true, ""));
  engine.SetPolicies({*policy});
  engine.UpsertMember(Make("pod", "10.99.1.1/32", coord::MEMBER_KIND_POD, false, "node"));
  engine.UpsertMember(Make("nas", "10.99.0.9/32", coord::MEMBER_KIND_EXTERNAL, false, ""));
  for (const auto& [name, rules] : engine.TakeDirty()) {
    for (const std::string& p : rules.policies()) {
      if (p != policy->name) std::abort();
    }
    (void)tunnelmesh::policy::Evaluate(rules, tunnelmesh::IpAddress(), tunnelmesh::IpAddress(),
                                       coord::FILTER_PROTOCOL_TCP, 22);
  }
  engine.RemoveMember("node");
  return 0;
}
