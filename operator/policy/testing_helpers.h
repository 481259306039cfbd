// Test helpers for the policy compiler's tests: members and policies written briefly.
#pragma once

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "operator/api/peer_policy.h"
#include "operator/policy/compiler.h"

namespace tunnelmesh::policy::testing {

inline Member MakeMember(const std::string& name, const std::string& ip,
                         std::map<std::string, std::string> labels = {},
                         coord::MemberKind kind = coord::MEMBER_KIND_NODE) {
  Member m;
  m.name = name;
  m.kind = kind;
  m.labels = std::move(labels);
  m.addresses.push_back(*Prefix::Parse(ip));
  return m;
}

inline Member MakePod(const std::string& name, const std::string& ip, const std::string& ns,
                      const std::string& host, std::map<std::string, std::string> labels = {}) {
  Member m = MakeMember(name, ip, std::move(labels), coord::MEMBER_KIND_POD);
  m.namespace_name = ns;
  m.host = host;
  m.runs_agent = false;
  return m;
}

inline Member MakeStatic(const std::string& name, const std::string& ip,
                         std::map<std::string, std::string> labels = {}) {
  Member m = MakeMember(name, ip, std::move(labels), coord::MEMBER_KIND_EXTERNAL);
  m.runs_agent = false;
  return m;
}

// A PeerPolicy from its spec's JSON (mesh "demo" unless given); the test fails if it is invalid.
inline PeerPolicySpec MakePolicy(const std::string& name, nlohmann::json spec) {
  if (!spec.contains("mesh")) spec["mesh"] = "demo";
  if (!spec.contains("action")) spec["action"] = "Allow";
  absl::StatusOr<PeerPolicySpec> p =
      ParsePeerPolicy({{"metadata", {{"name", name}}}, {"spec", std::move(spec)}});
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : PeerPolicySpec{};
}

inline nlohmann::json Labels(const std::string& key, const std::string& value) {
  return {{{"peerSelector", {{"matchLabels", {{key, value}}}}}}};
}

inline IpAddress Ip(const std::string& text) { return *IpAddress::Parse(text); }

}  // namespace tunnelmesh::policy::testing
