#include "node-agent/policy/installer.h"

#include "gtest/gtest.h"

namespace tunnelmesh::policy {
namespace {

// An IPv4 TCP SYN from `src` to `dst`:`port`.
std::vector<uint8_t> Syn(const char* src, const char* dst, uint16_t port) {
  std::vector<uint8_t> p(40, 0);
  p[0] = 0x45;
  p[3] = 40;
  p[8] = 64;
  p[9] = 6;
  IpAddress s = *IpAddress::Parse(src), d = *IpAddress::Parse(dst);
  std::copy(s.bytes(), s.bytes() + 4, p.begin() + 12);
  std::copy(d.bytes(), d.bytes() + 4, p.begin() + 16);
  p[20] = 0x9c;
  p[21] = 0x40;
  p[22] = static_cast<uint8_t>(port >> 8);
  p[23] = static_cast<uint8_t>(port);
  p[32] = 0x50;
  p[33] = 0x02;
  return p;
}

coord::FilterRules AllowSsh() {
  coord::FilterRules rules;
  rules.add_policies("ssh");
  coord::FilterRule* rule = rules.add_rules();
  rule->add_destinations("10.99.0.1/32");
  rule->set_protocol(coord::FILTER_PROTOCOL_TCP);
  coord::PortRange* port = rule->add_ports();
  port->set_first(22);
  port->set_last(22);
  rule->set_action(coord::FILTER_ACTION_ALLOW);
  return rules;
}

TEST(RuleSetInstaller, InstallsAndSwaps) {
  filter::Filter f;
  RuleSetInstaller installer(&f);
  EXPECT_EQ(installer.rules(), nullptr);
  EXPECT_TRUE(f.Inbound(Syn("10.99.0.2", "10.99.0.1", 80), MonoTime{})) << "off: passes";
  ASSERT_TRUE(installer.Apply(AllowSsh()).ok());
  ASSERT_NE(installer.rules(), nullptr);
  EXPECT_EQ(installer.rules()->rules.size(), 1u);
  EXPECT_TRUE(f.enabled());
  EXPECT_TRUE(f.Inbound(Syn("10.99.0.2", "10.99.0.1", 22), MonoTime{}));
  EXPECT_FALSE(f.Inbound(Syn("10.99.0.2", "10.99.0.1", 80), MonoTime{}));
  coord::FilterRules allow_all;
  allow_all.set_default_action(coord::FILTER_ACTION_ALLOW);
  ASSERT_TRUE(installer.Apply(allow_all).ok());
  EXPECT_TRUE(f.Inbound(Syn("10.99.0.2", "10.99.0.1", 80), MonoTime{}));
  EXPECT_EQ(installer.history().applied, 2u);
  EXPECT_EQ(installer.history().rejected, 0u);
}

TEST(RuleSetInstaller, ABadRuleSetKeepsThePreviousOne) {
  filter::Filter f;
  RuleSetInstaller installer(&f);
  ASSERT_TRUE(installer.Apply(AllowSsh()).ok());
  coord::FilterRules bad = AllowSsh();
  bad.mutable_rules(0)->set_destinations(0, "10.99.0.1/40");
  bad.set_default_action(coord::FILTER_ACTION_ALLOW);
  absl::Status s = installer.Apply(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("filter.rules[0].destinations[0]"), absl::string_view::npos);
  EXPECT_EQ(installer.history().applied, 1u);
  EXPECT_EQ(installer.history().rejected, 1u);
  EXPECT_EQ(installer.rules()->default_action, filter::Action::kDeny);
  EXPECT_FALSE(f.Inbound(Syn("10.99.0.2", "10.99.0.1", 80), MonoTime{})) << "still the old rules";
}

}  // namespace
}  // namespace tunnelmesh::policy
