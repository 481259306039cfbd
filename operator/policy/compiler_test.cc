#include "operator/policy/compiler.h"

#include "gtest/gtest.h"
#include "operator/policy/engine.h"
#include "operator/policy/testing_helpers.h"

namespace tunnelmesh::policy {
namespace {

using testing::Ip;
using testing::Labels;
using testing::MakeMember;
using testing::MakePod;
using testing::MakePolicy;
using testing::MakeStatic;

std::vector<std::string> Strings(const std::vector<Prefix>& prefixes) {
  std::vector<std::string> out;
  for (const Prefix& p : prefixes) out.push_back(p.ToString());
  return out;
}

std::vector<std::string> Strings(const google::protobuf::RepeatedPtrField<std::string>& list) {
  return {list.begin(), list.end()};
}

Decision Decide(const Engine& engine, const std::string& enforcer, const std::string& src,
                const std::string& dst, coord::FilterProtocol protocol, uint16_t port) {
  const coord::FilterRules* rules = engine.RulesFor(enforcer);
  EXPECT_NE(rules, nullptr) << enforcer;
  if (rules == nullptr) return {};
  return Evaluate(*rules, Ip(src), Ip(dst), protocol, port);
}

constexpr auto kTcp = coord::FILTER_PROTOCOL_TCP;
constexpr auto kUdp = coord::FILTER_PROTOCOL_UDP;
constexpr auto kIcmp = coord::FILTER_PROTOCOL_ICMP;
constexpr auto kAllow = coord::FILTER_ACTION_ALLOW;
constexpr auto kDeny = coord::FILTER_ACTION_DENY;

TEST(SelectorTest, MatchLabelsAndExpressions) {
  LabelSelector s;
  s.match_labels = {{"role", "ci"}};
  s.match_expressions = {{"zone", "In", {"a", "b"}},
                         {"tier", "NotIn", {"prod"}},
                         {"team", "Exists", {}},
                         {"legacy", "DoesNotExist", {}}};
  EXPECT_TRUE(SelectorMatches(s, {{"role", "ci"}, {"zone", "a"}, {"team", "x"}}));
  EXPECT_FALSE(SelectorMatches(s, {{"role", "ci"}, {"zone", "c"}, {"team", "x"}}));
  EXPECT_FALSE(
      SelectorMatches(s, {{"role", "ci"}, {"zone", "a"}, {"team", "x"}, {"tier", "prod"}}));
  EXPECT_FALSE(SelectorMatches(s, {{"role", "ci"}, {"zone", "a"}}));
  EXPECT_FALSE(SelectorMatches(s, {{"role", "ci"}, {"zone", "a"}, {"team", "x"}, {"legacy", "1"}}));
  EXPECT_FALSE(SelectorMatches(s, {{"role", "db"}, {"zone", "a"}, {"team", "x"}}));
  EXPECT_TRUE(SelectorMatches(LabelSelector{}, {}));
}

TEST(SelectorTest, TermFieldsAreAndedAndTermsOred) {
  PeerPolicySpec p = MakePolicy(
      "p", {{"from",
             {{{"names", {"git", "db"}}, {"kinds", {"Node"}}},
              {{"peerSelector", {{"matchLabels", {{"role", "ci"}}}}}, {"kinds", {"External"}}}}}});
  EXPECT_TRUE(SideSelects(p.from, MakeMember("git", "10.0.0.1/32")));
  EXPECT_FALSE(SideSelects(p.from, MakeMember("web", "10.0.0.2/32")));
  EXPECT_FALSE(
      SideSelects(p.from, MakeMember("git", "10.0.0.1/32", {}, coord::MEMBER_KIND_EXTERNAL)));
  EXPECT_TRUE(SideSelects(
      p.from, MakeMember("laptop", "10.0.0.3/32", {{"role", "ci"}}, coord::MEMBER_KIND_EXTERNAL)));
  EXPECT_FALSE(SideSelects(p.from, MakeMember("runner", "10.0.0.4/32", {{"role", "ci"}})));
  // An empty side selects every member.
  EXPECT_TRUE(SideSelects({}, MakeMember("anyone", "10.0.0.5/32")));
}

TEST(SelectorTest, PodSelectorsSelectPodsByNamespaceLabels) {
  PeerPolicySpec p = MakePolicy(
      "p", {{"to",
             {{{"namespaceSelector", {{"matchLabels", {{"kubernetes.io/metadata.name", "ci"}}}}},
               {"podSelector", {{"matchLabels", {{"app", "runner"}}}}}}}}});
  Member pod = MakePod("runner-1", "10.0.1.1/32", "ci", "node-a", {{"app", "runner"}});
  EXPECT_TRUE(SideSelects(p.to, pod));
  pod.namespace_name = "prod";
  EXPECT_FALSE(SideSelects(p.to, pod));
  pod.namespace_labels = {{"kubernetes.io/metadata.name", "ci"}};  // Known labels win.
  EXPECT_TRUE(SideSelects(p.to, pod));
  // A Node with the same labels is not a pod.
  EXPECT_FALSE(SideSelects(p.to, MakeMember("node-a", "10.0.0.1/32", {{"app", "runner"}})));
}

TEST(PrefixTest, SubtractAndIntersect) {
  const Prefix p = *Prefix::Parse("10.0.0.0/8");
  EXPECT_EQ(Strings(Subtract(p, {*Prefix::Parse("10.128.0.0/9")})),
            (std::vector<std::string>{"10.0.0.0/9"}));
  EXPECT_EQ(Strings(Subtract(p, {*Prefix::Parse("10.0.0.0/10")})),
            (std::vector<std::string>{"10.64.0.0/10", "10.128.0.0/9"}));
  EXPECT_TRUE(Subtract(p, {*Prefix::Parse("0.0.0.0/0")}).empty());
  EXPECT_EQ(Subtract(p, {*Prefix::Parse("fd00::/8")}).size(), 1u);
  const std::vector<Prefix> cut = Subtract(p, {*Prefix::Parse("10.1.2.3/32")});
  EXPECT_EQ(cut.size(), 24u);  // One prefix per bit from /9 to /32.
  for (const Prefix& c : cut) EXPECT_FALSE(c.Contains(Ip("10.1.2.3")));
  EXPECT_EQ(Strings(Intersect({p}, {*Prefix::Parse("10.1.0.0/16"), *Prefix::Parse("11.0.0.0/8")})),
            (std::vector<std::string>{"10.1.0.0/16"}));
  EXPECT_TRUE(Intersect({p}, {*Prefix::Parse("fd00::1/128")}).empty());
}

TEST(CompilerTest, AllowsOnlyWhatAPolicySelectsUnderDefaultDeny) {
  Engine engine;
  engine.UpsertMember(MakeMember("runner", "10.99.0.1/32", {{"role", "ci"}}));
  engine.UpsertMember(MakeMember("git", "10.99.0.2/32", {{"app", "git"}}));
  engine.UpsertMember(MakeMember("db", "10.99.0.3/32", {{"app", "db"}}));
  engine.SetPolicies({MakePolicy(
      "runners-to-git",
      {{"from", Labels("role", "ci")},
       {"to", Labels("app", "git")},
       {"ports", {{{"protocol", "TCP"}, {"port", 22}}, {{"protocol", "TCP"}, {"port", 443}}}}})});
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kTcp, 22).action, kAllow);
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kTcp, 22).policy, "runners-to-git");
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kTcp, 443).action, kAllow);
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kTcp, 8080).action, kDeny);
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kUdp, 22).action, kDeny);
  EXPECT_EQ(Decide(engine, "git", "10.99.0.1", "10.99.0.2", kIcmp, 0).action, kDeny);
  EXPECT_EQ(Decide(engine, "git", "10.99.0.3", "10.99.0.2", kTcp, 22).action, kDeny);
  EXPECT_EQ(Decide(engine, "db", "10.99.0.1", "10.99.0.3", kTcp, 5432).action, kDeny);
  EXPECT_EQ(Decide(engine, "db", "10.99.0.1", "10.99.0.3", kTcp, 5432).policy, "");
  // The two TCP ports merged into one rule; only git holds it.
  const coord::FilterRules* git = engine.RulesFor("git");
  ASSERT_EQ(git->rules_size(), 1);
  EXPECT_EQ(git->rules(0).ports_size(), 2);
  EXPECT_EQ(Strings(git->rules(0).sources()), (std::vector<std::string>{"10.99.0.1/32"}));
  EXPECT_EQ(Strings(git->rules(0).destinations()), (std::vector<std::string>{"10.99.0.2/32"}));
  EXPECT_EQ(engine.RulesFor("runner")->rules_size(), 0);
  EXPECT_EQ(engine.StatsFor("runners-to-git"), (PolicyStats{1, 1, false, false, 1}));
}

TEST(CompilerTest, DenyWinsAndTheDefaultActionDecidesTheRest) {
  Engine engine;
  engine.UpsertMember(MakeMember("a", "10.99.0.1/32", {{"team", "x"}}));
  engine.UpsertMember(MakeMember("b", "10.99.0.2/32", {{"team", "x"}}));
  engine.SetPolicies(
      {MakePolicy("team-x", {{"from", Labels("team", "x")}, {"to", Labels("team", "x")}}),
       MakePolicy("no-ssh", {{"action", "Deny"},
                             {"from", nlohmann::json::array()},
                             {"to", Labels("team", "x")},
                             {"ports", {{{"protocol", "TCP"}, {"port", 22}}}}})});
  Decision ssh = Decide(engine, "b", "10.99.0.1", "10.99.0.2", kTcp, 22);
  EXPECT_EQ(ssh.action, kDeny);
  EXPECT_EQ(ssh.policy, "no-ssh");
  EXPECT_EQ(Decide(engine, "b", "10.99.0.1", "10.99.0.2", kTcp, 80).policy, "team-x");
  EXPECT_EQ(Decide(engine, "b", "10.99.0.1", "10.99.0.2", kIcmp, 0).action, kAllow);
  // Traffic from outside any selection: the default.
  EXPECT_EQ(Decide(engine, "b", "192.0.2.1", "10.99.0.2", kTcp, 80).action, kDeny);
  engine.SetDefaultAction(kAllow);
  EXPECT_EQ(Decide(engine, "b", "192.0.2.1", "10.99.0.2", kTcp, 80).action, kAllow);
  EXPECT_EQ(Decide(engine, "b", "192.0.2.1", "10.99.0.2", kTcp, 22).action, kAllow)
      << "no-ssh's from selects members only";
  EXPECT_EQ(Decide(engine, "b", "10.99.0.1", "10.99.0.2", kTcp, 22).action, kDeny);
  EXPECT_EQ(engine.RulesFor("a")->default_action(), kAllow);
}

TEST(CompilerTest, IpBlocksWithExcepts) {
  Engine engine;
  engine.UpsertMember(MakeMember("gw", "10.99.0.1/32", {{"role", "gw"}}));
  engine.UpsertMember(MakeMember("office", "10.99.0.9/32"));
  engine.SetPolicies({MakePolicy(
      "office-in",
      {{"from", {{{"ipBlock", {{"cidr", "192.168.0.0/16"}, {"except", {"192.168.66.0/24"}}}}}}},
       {"to", Labels("role", "gw")},
       {"ports", {{{"protocol", "UDP"}, {"port", 5000}, {"endPort", 5010}}}}})});
  EXPECT_EQ(Decide(engine, "gw", "192.168.1.1", "10.99.0.1", kUdp, 5005).action, kAllow);
  EXPECT_EQ(Decide(engine, "gw", "192.168.1.1", "10.99.0.1", kUdp, 5011).action, kDeny);
  EXPECT_EQ(Decide(engine, "gw", "192.168.66.1", "10.99.0.1", kUdp, 5005).action, kDeny);
  EXPECT_EQ(Decide(engine, "gw", "10.99.0.9", "10.99.0.1", kUdp, 5005).action, kDeny);
  EXPECT_EQ(engine.StatsFor("office-in")->selected_sources, 0u);
  EXPECT_TRUE(engine.StatsFor("office-in")->source_blocks);
  // A `to` ipBlock covering a member's address puts the rule in that member's set.
  engine.SetPolicies(
      {MakePolicy("to-block", {{"from", nlohmann::json::array()},
                               {"to", {{{"ipBlock", {{"cidr", "10.99.0.0/29"}}}}}}})});
  EXPECT_EQ(Decide(engine, "gw", "10.99.0.9", "10.99.0.1", kTcp, 1).action, kAllow);
  EXPECT_EQ(Decide(engine, "office", "10.99.0.1", "10.99.0.9", kTcp, 1).action, kDeny);
}

TEST(CompilerTest, PodRulesGoToTheHostingMember) {
  Engine engine;
  engine.UpsertMember(MakeMember("node-a", "10.99.0.1/32"));
  engine.UpsertMember(MakeMember("node-b", "10.99.0.2/32"));
  engine.UpsertMember(MakePod("db-0", "10.99.1.1/32", "data", "node-a", {{"app", "db"}}));
  engine.UpsertMember(MakePod("api-0", "10.99.1.2/32", "web", "node-b", {{"app", "api"}}));
  engine.SetPolicies({MakePolicy(
      "api-to-db",
      {{"from",
        {{{"namespaceSelector", {{"matchLabels", {{"kubernetes.io/metadata.name", "web"}}}}}}}},
       {"to", {{{"podSelector", {{"matchLabels", {{"app", "db"}}}}}}}},
       {"ports", {{{"protocol", "TCP"}, {"port", 5432}}}}})});
  EXPECT_EQ(Decide(engine, "node-a", "10.99.1.2", "10.99.1.1", kTcp, 5432).action, kAllow);
  EXPECT_EQ(engine.RulesFor("node-b")->rules_size(), 0);
  EXPECT_EQ(engine.RulesFor("db-0"), nullptr) << "a pod's host enforces for it";
  EXPECT_EQ(engine.StatsFor("api-to-db"), (PolicyStats{1, 1, false, false, 1}));
}

TEST(CompilerTest, StaticPeersAreCheckedOnSend) {
  Engine engine;
  engine.UpsertMember(MakeMember("runner", "10.99.0.1/32", {{"role", "ci"}}));
  engine.UpsertMember(MakeMember("web", "10.99.0.2/32"));
  engine.UpsertMember(MakeStatic("nas", "10.99.0.50/32", {{"app", "nas"}}));
  engine.SetPolicies(
      {MakePolicy("ci-to-nas", {{"from", Labels("role", "ci")},
                                {"to", Labels("app", "nas")},
                                {"ports", {{{"protocol", "TCP"}, {"port", 445}}}}})});
  EXPECT_EQ(engine.RulesFor("nas"), nullptr);
  for (const char* member : {"runner", "web"}) {
    EXPECT_EQ(Strings(engine.RulesFor(member)->egress_prefixes()),
              (std::vector<std::string>{"10.99.0.50/32"}));
  }
  EXPECT_EQ(Decide(engine, "runner", "10.99.0.1", "10.99.0.50", kTcp, 445).action, kAllow);
  EXPECT_EQ(Decide(engine, "runner", "10.99.0.1", "10.99.0.50", kTcp, 22).action, kDeny);
  EXPECT_EQ(Decide(engine, "web", "10.99.0.2", "10.99.0.50", kTcp, 445).action, kDeny);
  EXPECT_EQ(engine.RulesFor("web")->rules_size(), 0);
}

TEST(CompilerTest, EqualInputsGiveByteEqualRuleSets) {
  auto build = [](bool reversed) {
    Engine engine;
    std::vector<Member> members = {MakeMember("a", "10.99.0.1/32", {{"x", "1"}}),
                                   MakeMember("b", "10.99.0.2/32", {{"x", "1"}}),
                                   MakeMember("c", "10.99.0.3/32", {{"y", "1"}})};
    std::vector<PeerPolicySpec> policies = {
        MakePolicy("p1", {{"from", Labels("x", "1")}, {"to", Labels("y", "1")}}),
        MakePolicy("p2",
                   {{"from", Labels("y", "1")},
                    {"to", Labels("x", "1")},
                    {"ports", {{{"protocol", "UDP"}, {"port", 53}}, {{"protocol", "ICMP"}}}}})};
    if (reversed) {
      std::reverse(members.begin(), members.end());
      std::reverse(policies.begin(), policies.end());
      engine.SetPolicies(policies);
      for (const Member& m : members) engine.UpsertMember(m);
    } else {
      for (const Member& m : members) engine.UpsertMember(m);
      engine.SetPolicies(policies);
    }
    std::string out;
    for (const char* name : {"a", "b", "c"}) out += engine.RulesFor(name)->SerializeAsString();
    return out;
  };
  EXPECT_EQ(build(false), build(true));
}

TEST(EvaluateTest, ProtocolsAndPorts) {
  coord::FilterRules rules;
  coord::FilterRule* any = rules.add_rules();
  any->set_protocol(coord::FILTER_PROTOCOL_ANY);
  any->add_sources("10.0.0.1/32");
  any->set_action(kAllow);
  coord::FilterRule* tcp = rules.add_rules();
  tcp->set_protocol(kTcp);
  coord::PortRange* r = tcp->add_ports();
  r->set_first(80);
  r->set_last(90);
  tcp->set_action(kAllow);
  tcp->set_policy(7);  // Out of range: no name rather than a crash.
  EXPECT_EQ(Evaluate(rules, Ip("10.0.0.1"), Ip("10.0.0.2"), coord::FILTER_PROTOCOL_ANY, 0).action,
            kAllow);
  EXPECT_EQ(Evaluate(rules, Ip("10.0.0.3"), Ip("10.0.0.2"), kTcp, 85).action, kAllow);
  EXPECT_EQ(Evaluate(rules, Ip("10.0.0.3"), Ip("10.0.0.2"), kTcp, 85).policy, "");
  EXPECT_EQ(Evaluate(rules, Ip("10.0.0.3"), Ip("10.0.0.2"), kTcp, 91).action, kDeny);
  EXPECT_EQ(Evaluate(rules, Ip("10.0.0.3"), Ip("10.0.0.2"), kUdp, 85).action, kDeny);
  EXPECT_EQ(Evaluate(rules, Ip("fd00::1"), Ip("10.0.0.2"), kTcp, 85).action, kAllow);
}

}  // namespace
}  // namespace tunnelmesh::policy
