#include "node-agent/policy/filter_status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::policy {
namespace {

using ::testing::HasSubstr;

// An IPv4 UDP packet from `src` to `dst`:`port`.
std::vector<uint8_t> Udp(const char* src, const char* dst, uint16_t port) {
  std::vector<uint8_t> p(36, 0);
  p[0] = 0x45;
  p[3] = 36;
  p[8] = 64;
  p[9] = 17;
  IpAddress s = *IpAddress::Parse(src), d = *IpAddress::Parse(dst);
  std::copy(s.bytes(), s.bytes() + 4, p.begin() + 12);
  std::copy(d.bytes(), d.bytes() + 4, p.begin() + 16);
  p[20] = 0x30;
  p[21] = 0x39;
  p[22] = static_cast<uint8_t>(port >> 8);
  p[23] = static_cast<uint8_t>(port);
  p[25] = 16;
  return p;
}

TEST(FilterStatus, OffBeforeTheFirstRuleSet) {
  filter::Filter f;
  nlohmann::json j = FilterStatusJson(f, nullptr, {});
  EXPECT_FALSE(j["enabled"].get<bool>());
  EXPECT_FALSE(j.contains("default_action"));
  EXPECT_EQ(j["drops"]["default_denied"], 0);
  EXPECT_EQ(FormatFilterStatus(j), "filter: off (no rule set)\n");
}

TEST(FilterStatus, CountsPerPolicyAndReason) {
  filter::RuleSet rules;
  rules.policies = {"dns"};
  filter::Rule dns;
  dns.destinations = {*Prefix::Parse("10.99.0.1/32")};
  dns.protocol = filter::Protocol::kUdp;
  dns.ports = {{53, 53}};
  rules.rules = {dns};
  filter::Filter f;
  f.SetRules(std::make_shared<const filter::Matcher>(rules));
  const MonoTime now{};
  EXPECT_TRUE(f.Inbound(Udp("10.99.0.2", "10.99.0.1", 53), now));
  EXPECT_FALSE(f.Inbound(Udp("10.99.0.2", "10.99.0.1", 54), now));
  EXPECT_FALSE(f.Inbound(Udp("10.99.0.3", "10.99.0.1", 55), now));
  nlohmann::json j = FilterStatusJson(f, &rules, {.applied = 2, .rejected = 1});
  EXPECT_TRUE(j["enabled"].get<bool>());
  EXPECT_EQ(j["default_action"], "deny");
  EXPECT_EQ(j["rules"], 1);
  EXPECT_EQ(j["policy_count"], 1);
  ASSERT_EQ(j["policies"].size(), 1u);
  EXPECT_EQ(j["policies"][0]["name"], "dns");
  EXPECT_EQ(j["policies"][0]["allowed"], 1);
  EXPECT_EQ(j["default"]["denied"], 2);
  EXPECT_EQ(j["drops"]["default_denied"], 2);
  EXPECT_EQ(j["tracked_flows"], 1);
  EXPECT_EQ(j["rule_sets_applied"], 2);
  EXPECT_EQ(j["rule_sets_rejected"], 1);
  const std::string line = FormatFilterStatus(j);
  EXPECT_THAT(line, HasSubstr("filter: on, default deny, 1 rules from 1 policies"));
  EXPECT_THAT(line, HasSubstr("dropped 2 (default_denied=2)"));
  EXPECT_THAT(line, HasSubstr("1 rule sets rejected"));
}

TEST(FilterStatus, FormatSurvivesOddJson) {
  EXPECT_EQ(FormatFilterStatus(nlohmann::json()), "");
  EXPECT_EQ(FormatFilterStatus(nlohmann::json::parse(R"({"enabled": true, "drops": [1]})")),
            "filter: on, default deny, 0 rules from 0 policies, 0 flows tracked\n");
}

}  // namespace
}  // namespace tunnelmesh::policy
