// The incremental engine: exactly which members' rule sets change, and that the incremental
// result always equals a fresh compile of the same inputs.
#include "operator/policy/engine.h"

#include <random>

#include "gtest/gtest.h"
#include "operator/policy/testing_helpers.h"

namespace tunnelmesh::policy {
namespace {

using testing::Ip;
using testing::Labels;
using testing::MakeMember;
using testing::MakePod;
using testing::MakePolicy;
using testing::MakeStatic;

std::set<std::string> DirtyNames(Engine* engine) {
  std::set<std::string> out;
  for (const auto& [name, rules] : engine->TakeDirty()) out.insert(name);
  return out;
}

using Names = std::set<std::string>;

// runner (role=ci), git and registry (app=git / app=registry), db (app=db), web (no labels);
// runners may reach git and the registry.
class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_.UpsertMember(MakeMember("runner-1", "10.99.0.1/32", {{"role", "ci"}}));
    engine_.UpsertMember(MakeMember("git", "10.99.0.2/32", {{"app", "git"}}));
    engine_.UpsertMember(MakeMember("registry", "10.99.0.3/32", {{"app", "registry"}}));
    engine_.UpsertMember(MakeMember("db", "10.99.0.4/32", {{"app", "db"}}));
    engine_.UpsertMember(MakeMember("web", "10.99.0.5/32"));
    engine_.SetPolicies({RunnersToGit()});
    (void)engine_.TakeDirty();
  }
  static PeerPolicySpec RunnersToGit() {
    return MakePolicy(
        "runners-to-git",
        {{"from", Labels("role", "ci")},
         {"to",
          {{{"peerSelector",
             {{"matchExpressions",
               {{{"key", "app"}, {"operator", "In"}, {"values", {"git", "registry"}}}}}}}}}},
         {"ports", {{{"protocol", "TCP"}, {"port", 22}}, {{"protocol", "TCP"}, {"port", 443}}}}});
  }
  Engine engine_;
};

TEST_F(EngineTest, JoinSelectedByFromDirtiesTheDestinationsAndItself) {
  engine_.UpsertMember(MakeMember("runner-2", "10.99.0.6/32", {{"role", "ci"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry", "runner-2"}));
  EXPECT_EQ(engine_.StatsFor("runners-to-git")->selected_sources, 2u);
}

TEST_F(EngineTest, JoinNoPolicySelectsDirtiesOnlyItself) {
  engine_.UpsertMember(MakeMember("laptop", "10.99.0.7/32", {{"owner", "ann"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"laptop"}));
  // Setup: five members, then the policy recompiled git and registry; now only the laptop.
  EXPECT_EQ(engine_.counters().recompiled, 5u + 2u + 1u);
}

TEST_F(EngineTest, JoinSelectedByToDirtiesOnlyItself) {
  engine_.UpsertMember(MakeMember("git-2", "10.99.0.8/32", {{"app", "git"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git-2"}));
  EXPECT_EQ(engine_.RulesFor("git-2")->rules_size(), 1);
}

TEST_F(EngineTest, LeavingDirtiesTheMembersThatListedIt) {
  engine_.RemoveMember("runner-1");
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry"}));
  EXPECT_EQ(engine_.RulesFor("git")->rules_size(), 0) << "no source left: no rule";
  EXPECT_EQ(engine_.RulesFor("runner-1"), nullptr);
  engine_.RemoveMember("web");
  EXPECT_EQ(DirtyNames(&engine_), Names{});
}

TEST_F(EngineTest, LabelChangesMoveAMemberBetweenSides) {
  engine_.UpsertMember(MakeMember("web", "10.99.0.5/32", {{"role", "ci"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry"}));
  engine_.UpsertMember(MakeMember("web", "10.99.0.5/32", {{"app", "git"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry", "web"}));
  engine_.UpsertMember(MakeMember("web", "10.99.0.5/32", {{"app", "git"}}));  // Unchanged.
  EXPECT_EQ(DirtyNames(&engine_), Names{});
}

TEST_F(EngineTest, PolicyAddedChangedAndRemoved) {
  std::vector<PeerPolicySpec> policies = {
      RunnersToGit(),
      MakePolicy("web-to-db", {{"from", nlohmann::json::array({{{"names", {"web"}}}})},
                               {"to", Labels("app", "db")}})};
  engine_.SetPolicies(policies);
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db"}));
  policies[1].ports = {{"TCP", 5432, 0}};
  engine_.SetPolicies(policies);
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db"}));
  engine_.SetPolicies(policies);  // Same again.
  EXPECT_EQ(DirtyNames(&engine_), Names{});
  policies[0].ports.push_back({"TCP", 8080, 0});
  engine_.SetPolicies(policies);
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry"}));
  policies.erase(policies.begin());
  engine_.SetPolicies(policies);
  EXPECT_EQ(DirtyNames(&engine_), (Names{"git", "registry"}));
  EXPECT_FALSE(engine_.StatsFor("runners-to-git").has_value());
  EXPECT_EQ(engine_.StatsFor("web-to-db"), (PolicyStats{1, 1, false, false, 1}));
}

TEST_F(EngineTest, DefaultActionChangeDirtiesEveryEnforcer) {
  engine_.SetDefaultAction(coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db", "git", "registry", "runner-1", "web"}));
  engine_.SetDefaultAction(coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(DirtyNames(&engine_), Names{});
}

TEST_F(EngineTest, StaticMembersChangeEveryAgentsEgress) {
  engine_.UpsertMember(MakeStatic("nas", "10.99.0.50/32"));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db", "git", "registry", "runner-1", "web"}));
  engine_.RemoveMember("nas");
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db", "git", "registry", "runner-1", "web"}));
}

TEST_F(EngineTest, PodsDirtyTheirHost) {
  engine_.UpsertMember(MakePod("git-pod", "10.99.1.1/32", "dev", "web", {{"app", "git"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"web"}));
  EXPECT_EQ(engine_.RulesFor("web")->rules_size(), 1);
  engine_.UpsertMember(MakePod("git-pod", "10.99.1.1/32", "dev", "db", {{"app", "git"}}));
  EXPECT_EQ(DirtyNames(&engine_), (Names{"db", "web"}));
}

// Random joins, leaves, label edits and policy edits: the incremental rule sets always equal a
// fresh engine's over the same members and policies, and every change is reported.
TEST(EngineExitTest, InternetRulesGoToCoveredExitsWithTheirClients) {
  Engine engine;
  engine.SetMeshRanges({*Prefix::Parse("10.99.0.0/16"), *Prefix::Parse("fd99:99::/48")});
  Member eu = MakeMember("eu", "10.99.0.1/32", {{"region", "eu"}});
  eu.exit = true;
  Member us = MakeMember("us", "10.99.0.2/32", {{"region", "us"}});
  us.exit = true;
  Member plain = MakeMember("plain", "10.99.0.3/32", {{"region", "eu"}});  // Not an exit.
  engine.UpsertMember(eu);
  engine.UpsertMember(us);
  engine.UpsertMember(plain);
  engine.UpsertMember(MakeMember("laptop", "10.99.0.4/32", {{"role", "laptop"}}));
  engine.SetPolicies({MakePolicy(
      "laptops-out",
      {{"from", Labels("role", "laptop")},
       {"to", {{{"internet", {{"exitSelector", {{"matchLabels", {{"region", "eu"}}}}}}}}}},
       {"ports", {{{"protocol", "TCP"}, {"port", 443}}}}})});
  EXPECT_EQ(DirtyNames(&engine), (Names{"eu", "laptop", "plain", "us"}));
  EXPECT_EQ(engine.ExitClientsFor("eu"), std::vector<Prefix>{*Prefix::Parse("10.99.0.4/32")});
  EXPECT_TRUE(engine.ExitClientsFor("us").empty()) << "the exitSelector leaves it out";
  EXPECT_TRUE(engine.ExitClientsFor("plain").empty()) << "offers no exit";
  const coord::FilterRules* rules = engine.RulesFor("eu");
  ASSERT_NE(rules, nullptr);
  ASSERT_EQ(rules->rules_size(), 1);
  EXPECT_EQ(rules->rules(0).protocol(), coord::FILTER_PROTOCOL_TCP);
  EXPECT_EQ(rules->rules(0).ports(0).first(), 443u);
  // Every address outside the mesh: 16 IPv4 prefixes around 10.99/16, 48 IPv6 ones around /48.
  EXPECT_EQ(rules->rules(0).destinations_size(), 16 + 48);
  EXPECT_EQ(
      Evaluate(*rules, Ip("10.99.0.4"), Ip("192.0.2.7"), coord::FILTER_PROTOCOL_TCP, 443).action,
      coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(
      Evaluate(*rules, Ip("10.99.0.4"), Ip("10.99.0.1"), coord::FILTER_PROTOCOL_TCP, 443).policy,
      "")
      << "the exit itself is no part of the internet";
  EXPECT_EQ(engine.StatsFor("laptops-out")->selected_destinations, 1u);

  // A new client dirties the exits that serve it; a Deny adds rules but no client.
  engine.UpsertMember(MakeMember("laptop-2", "10.99.0.5/32", {{"role", "laptop"}}));
  EXPECT_EQ(DirtyNames(&engine), (Names{"eu", "laptop-2"}));
  EXPECT_EQ(engine.ExitClientsFor("eu").size(), 2u);
  engine.UpsertPolicy(
      MakePolicy("no-laptop-2", {{"action", "Deny"},
                                 {"from", {{{"names", {"laptop-2"}}}}},
                                 {"to", {{{"internet", nlohmann::json::object()}}}}}));
  EXPECT_EQ(DirtyNames(&engine), (Names{"eu", "us"}));
  EXPECT_EQ(engine.ExitClientsFor("eu").size(), 2u);
  EXPECT_TRUE(engine.ExitClientsFor("us").empty());
  // The exit stops offering itself.
  eu.exit = false;
  engine.UpsertMember(eu);
  EXPECT_EQ(DirtyNames(&engine), (Names{"eu"}));
  EXPECT_TRUE(engine.ExitClientsFor("eu").empty());
}

TEST(EngineModelTest, IncrementalEqualsFreshCompile) {
  std::mt19937 rng(9);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  const std::vector<std::string> values = {"a", "b", "c"};
  Engine engine;
  engine.SetMeshRanges({*Prefix::Parse("10.99.0.0/24")});
  std::map<std::string, Member> members;
  std::map<std::string, PeerPolicySpec> policies;
  std::map<std::string, std::string> last_bytes;
  for (int step = 0; step < 400; ++step) {
    const int op = pick(10);
    const std::string name = "m" + std::to_string(pick(12));
    if (op < 5) {
      Member m = MakeMember(name, "10.99.0." + std::to_string(pick(200) + 1) + "/32",
                            {{"role", values[pick(3)]}});
      m.exit = pick(3) == 0;
      if (pick(6) == 0) m = MakeStatic(name, m.addresses[0].ToString(), m.labels);
      if (pick(6) == 0)
        m = MakePod(name, m.addresses[0].ToString(), "ns" + values[pick(3)],
                    "m" + std::to_string(pick(12)), m.labels);
      members[name] = m;
      engine.UpsertMember(m);
    } else if (op < 7) {
      members.erase(name);
      engine.RemoveMember(name);
    } else if (op < 9) {
      const std::string policy = "p" + std::to_string(pick(4));
      nlohmann::json spec = {{"from", Labels("role", values[pick(3)])},
                             {"to", Labels("role", values[pick(3)])}};
      if (pick(3) == 0) spec["from"] = {{{"ipBlock", {{"cidr", "10.99.0.0/25"}}}}};
      if (pick(3) == 0) spec["to"] = {{{"ipBlock", {{"cidr", "10.99.0.64/26"}}}}};
      if (pick(3) == 0) spec["to"] = {{{"namespaceSelector", nlohmann::json::object()}}};
      if (pick(4) == 0) {
        spec["to"] = {
            {{"internet", {{"exitSelector", {{"matchLabels", {{"role", values[pick(3)]}}}}}}}}};
      }
      if (pick(2) == 0) spec["ports"] = {{{"protocol", "TCP"}, {"port", 1 + pick(100)}}};
      if (pick(4) == 0) spec["action"] = "Deny";
      policies[policy] = MakePolicy(policy, spec);
      std::vector<PeerPolicySpec> list;
      for (const auto& [n, p] : policies) list.push_back(p);
      engine.SetPolicies(list);
    } else {
      policies.erase("p" + std::to_string(pick(4)));
      std::vector<PeerPolicySpec> list;
      for (const auto& [n, p] : policies) list.push_back(p);
      engine.SetPolicies(list);
    }
    for (auto& [n, rules] : engine.TakeDirty()) last_bytes[n] = rules.SerializeAsString();
    Engine fresh;
    fresh.SetMeshRanges({*Prefix::Parse("10.99.0.0/24")});
    for (const auto& [n, m] : members) fresh.UpsertMember(m);
    std::vector<PeerPolicySpec> list;
    for (const auto& [n, p] : policies) list.push_back(p);
    fresh.SetPolicies(list);
    for (const auto& [n, m] : members) {
      const coord::FilterRules* want = fresh.RulesFor(n);
      const coord::FilterRules* got = engine.RulesFor(n);
      ASSERT_EQ(want == nullptr, got == nullptr) << "step " << step << " member " << n;
      if (want == nullptr) continue;
      ASSERT_EQ(got->SerializeAsString(), want->SerializeAsString())
          << "step " << step << " member " << n;
      ASSERT_EQ(last_bytes[n], want->SerializeAsString())
          << "step " << step << ": a change to " << n << " was not reported";
      ASSERT_EQ(engine.ExitClientsFor(n), fresh.ExitClientsFor(n)) << "step " << step << " " << n;
    }
    for (const auto& [n, p] : policies) {
      ASSERT_EQ(engine.StatsFor(n), fresh.StatsFor(n)) << "step " << step << " policy " << n;
    }
  }
}

}  // namespace
}  // namespace tunnelmesh::policy
