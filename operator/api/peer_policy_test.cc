#include "operator/api/peer_policy.h"

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

nlohmann::json Policy(nlohmann::json spec) {
  return {{"apiVersion", "tunnelmesh.io/v1alpha1"},
          {"kind", "PeerPolicy"},
          {"metadata", {{"name", "p"}}},
          {"spec", std::move(spec)}};
}

nlohmann::json Valid() {
  return {{"mesh", "default"},
          {"action", "Allow"},
          {"from", {{{"peerSelector", {{"matchLabels", {{"role", "ci"}}}}}}}},
          {"to",
           {{{"namespaceSelector", {{"matchLabels", {{"team", "db"}}}}},
             {"podSelector",
              {{"matchExpressions",
                {{{"key", "app"}, {"operator", "In"}, {"values", {"postgres"}}}}}}}}}},
          {"ports", {{{"protocol", "TCP"}, {"port", 5432}}, {{"protocol", "ICMP"}}}}};
}

std::string ErrorOf(nlohmann::json spec) {
  auto parsed = ParsePeerPolicy(Policy(std::move(spec)));
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(PolicyTest, ParsesAValidPolicy) {
  auto p = ParsePeerPolicy(Policy(Valid()));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->name, "p");
  EXPECT_FALSE(p->deny);
  ASSERT_EQ(p->from.size(), 1u);
  EXPECT_EQ(p->from[0].peer->match_labels.at("role"), "ci");
  ASSERT_TRUE(p->to[0].pod.has_value());
  EXPECT_EQ(p->to[0].pod->match_expressions[0].values[0], "postgres");
  ASSERT_EQ(p->ports.size(), 2u);
  EXPECT_EQ(p->ports[0].port, 5432);
}

TEST(PolicyTest, ErrorsNameTheField) {
  nlohmann::json s = Valid();
  s["from"] = "everyone";
  EXPECT_NE(ErrorOf(s).find("spec.from"), std::string::npos);
  s = Valid();
  s["from"][0] = nlohmann::json::object();
  EXPECT_NE(ErrorOf(s).find("spec.from[0]"), std::string::npos);
  s = Valid();
  s["from"][0]["podSelector"] = nlohmann::json::object();
  EXPECT_NE(ErrorOf(s).find("cannot be combined"), std::string::npos);
  s = Valid();
  s["to"][0]["podSelector"]["matchExpressions"][0]["operator"] = "Exists";
  EXPECT_NE(ErrorOf(s).find("takes no values"), std::string::npos);
  s = Valid();
  s["to"][0]["podSelector"]["matchExpressions"][0]["values"] = nlohmann::json::array();
  EXPECT_NE(ErrorOf(s).find("needs values"), std::string::npos);
  s = Valid();
  s["from"][0]["peerSelector"]["matchLabels"] = {{"bad key!", "x"}};
  EXPECT_NE(ErrorOf(s).find("spec.from[0].peerSelector.matchLabels"), std::string::npos);
  s = Valid();
  s["ports"][1]["port"] = 7;
  EXPECT_NE(ErrorOf(s).find("ICMP has no ports"), std::string::npos);
  s = Valid();
  s["ports"][0]["endPort"] = 80;
  EXPECT_NE(ErrorOf(s).find("must not be below port"), std::string::npos);
  s = Valid();
  s["ports"][0]["port"] = 70000;
  EXPECT_NE(ErrorOf(s).find("spec.ports[0].port"), std::string::npos);
  s = Valid();
  s["action"] = "Maybe";
  EXPECT_NE(ErrorOf(s).find("spec.action"), std::string::npos);
  s = Valid();
  s.erase("mesh");
  EXPECT_NE(ErrorOf(s).find("spec.mesh"), std::string::npos);
  EXPECT_FALSE(ParsePeerPolicy(nlohmann::json::array()).ok());
}

TEST(PolicyTest, EmptyOrMissingFromAndToSelectEveryMember) {
  nlohmann::json s = Valid();
  s["from"] = nlohmann::json::array();
  s.erase("to");
  auto p = ParsePeerPolicy(Policy(s));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->from.empty());
  EXPECT_TRUE(p->to.empty());
}

TEST(PolicyTest, ParsesNamesKindsIpBlocksAndAny) {
  nlohmann::json s = Valid();
  s["from"] = {{{"names", {"git", "registry"}}, {"kinds", {"Node", "External"}}},
               {{"ipBlock", {{"cidr", "10.0.0.0/8"}, {"except", {"10.1.0.0/16"}}}}}};
  s["ports"] = {{{"protocol", "Any"}}, {{"protocol", "UDP"}, {"port", 1000}, {"endPort", 2000}}};
  auto p = ParsePeerPolicy(Policy(s));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->from.size(), 2u);
  EXPECT_EQ(p->from[0].names, (std::vector<std::string>{"git", "registry"}));
  EXPECT_EQ(p->from[0].kinds, (std::vector<std::string>{"Node", "External"}));
  ASSERT_TRUE(p->from[1].ip_block.has_value());
  EXPECT_EQ(p->from[1].ip_block->cidr.ToString(), "10.0.0.0/8");
  EXPECT_EQ(p->from[1].ip_block->except[0].ToString(), "10.1.0.0/16");
  EXPECT_EQ(p->ports[0].protocol, "Any");
  EXPECT_EQ(p->ports[1].end_port, 2000);
}

TEST(PolicyTest, InternetDestinations) {
  nlohmann::json s = Valid();
  s["to"] = {{{"internet", nlohmann::json::object()}},
             {{"internet", {{"exitSelector", {{"matchLabels", {{"region", "eu"}}}}}}}}};
  auto p = ParsePeerPolicy(Policy(s));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->to.size(), 2u);
  ASSERT_TRUE(p->to[0].internet.has_value());
  EXPECT_FALSE(p->to[0].internet->exit_selector.has_value());
  ASSERT_TRUE(p->to[1].internet->exit_selector.has_value());
  EXPECT_EQ(p->to[1].internet->exit_selector->match_labels.at("region"), "eu");

  s = Valid();
  s["from"] = {{{"internet", nlohmann::json::object()}}};
  EXPECT_NE(ErrorOf(s).find("spec.from[0].internet: is a destination"), std::string::npos)
      << ErrorOf(s);
  s = Valid();
  s["to"] = {{{"internet", nlohmann::json::object()}, {"names", {"db"}}}};
  EXPECT_NE(ErrorOf(s).find("spec.to[0].internet: stands alone"), std::string::npos) << ErrorOf(s);
  s = Valid();
  s["to"] = {{{"internet", nlohmann::json::object()}, {"ipBlock", {{"cidr", "10.0.0.0/8"}}}}};
  EXPECT_NE(ErrorOf(s).find("stands alone"), std::string::npos) << ErrorOf(s);
  s = Valid();
  s["to"] = {{{"internet", true}}};
  EXPECT_NE(ErrorOf(s).find("spec.to[0].internet: must be an object"), std::string::npos)
      << ErrorOf(s);
  s = Valid();
  s["to"] = {{{"internet", {{"exitSelectr", nlohmann::json::object()}}}}};
  EXPECT_NE(ErrorOf(s).find("exitSelectr"), std::string::npos)
      << "a misspelt field: " << ErrorOf(s);
}

TEST(PolicyTest, NewFieldErrorsNameTheField) {
  nlohmann::json s = Valid();
  s["from"][0]["kinds"] = {"Node", "Toaster"};
  EXPECT_NE(ErrorOf(s).find("spec.from[0].kinds[1]"), std::string::npos) << ErrorOf(s);
  s = Valid();
  s["from"][0]["names"] = {""};
  EXPECT_NE(ErrorOf(s).find("spec.from[0].names[0]"), std::string::npos);
  s = Valid();
  s["to"] = {{{"ipBlock", {{"cidr", "10.0.0.0/33"}}}}};
  EXPECT_NE(ErrorOf(s).find("spec.to[0].ipBlock.cidr"), std::string::npos);
  s = Valid();
  s["to"] = {{{"ipBlock", {{"cidr", "10.0.0.0/16"}, {"except", {"10.1.0.0/24"}}}}}};
  EXPECT_NE(ErrorOf(s).find("spec.to[0].ipBlock.except[0]"), std::string::npos);
  s = Valid();
  s["to"] = {{{"ipBlock", {{"cidr", "fd00::/8"}, {"except", {"10.0.0.0/24"}}}}}};
  EXPECT_NE(ErrorOf(s).find("must lie inside"), std::string::npos);
  s = Valid();
  s["to"] = {{{"ipBlock", {{"cidr", "10.0.0.0/8"}}}, {"names", {"db"}}}};
  EXPECT_NE(ErrorOf(s).find("stands alone"), std::string::npos);
  s = Valid();
  s["ports"] = {{{"protocol", "Any"}, {"port", 80}}};
  EXPECT_NE(ErrorOf(s).find("Any has no ports"), std::string::npos);
  s = Valid();
  s["ports"] = {{{"protocol", "SCTP"}}};
  EXPECT_NE(ErrorOf(s).find("spec.ports[0].protocol"), std::string::npos);
}

TEST(PolicyTest, UnknownFieldsAreErrors) {
  nlohmann::json s = Valid();
  s["ports"][0]["endport"] = 6000;
  EXPECT_EQ(ErrorOf(s),
            "unknown field spec.ports[0].endport (did you mean spec.ports[0].endPort?)");
  s = Valid();
  s["to"][0]["podSelector"]["matchExpressions"][0]["value"] = {"x"};
  EXPECT_EQ(ErrorOf(s),
            "unknown field spec.to[0].podSelector.matchExpressions[0].value (did you mean "
            "spec.to[0].podSelector.matchExpressions[0].values?)");
  s = Valid();
  s["from"] = {{{"ipBlock", {{"cidr", "10.0.0.0/8"}, {"excepts", {"10.1.0.0/16"}}}}}};
  EXPECT_EQ(
      ErrorOf(s),
      "unknown field spec.from[0].ipBlock.excepts (did you mean spec.from[0].ipBlock.except?)");
  s = Valid();
  s["sources"] = nlohmann::json::array();
  EXPECT_NE(ErrorOf(s).find("unknown field spec.sources (spec has mesh, action, from, to, ports)"),
            std::string::npos)
      << ErrorOf(s);
  nlohmann::json object = Policy(Valid());
  object["metadata"]["namespace"] = "default";  // Allowed in metadata, even if unused.
  object["status"] = {{"compiledRules", 3}};
  EXPECT_TRUE(ParsePeerPolicy(object).ok());
  object["metdata"] = nlohmann::json::object();
  EXPECT_EQ(ParsePeerPolicy(object).status().message(),
            "unknown field metdata (did you mean metadata?)");
}

TEST(PolicyTest, LabelRules) {
  EXPECT_TRUE(CheckLabel("app", "web").ok());
  EXPECT_TRUE(CheckLabel("example.com/role", "").ok());
  EXPECT_FALSE(CheckLabel("-app", "web").ok());
  EXPECT_FALSE(CheckLabel("app", std::string(64, 'a')).ok());
  EXPECT_FALSE(CheckLabel("/app", "x").ok());
  EXPECT_FALSE(CheckLabel("app", "a b").ok());
}

}  // namespace
}  // namespace tunnelmesh
