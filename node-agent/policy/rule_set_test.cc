#include "node-agent/policy/rule_set.h"

#include <random>

#include "gmock/gmock.h"
#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"

namespace tunnelmesh::policy {
namespace {

using ::testing::HasSubstr;

Prefix P(std::string_view text) { return *Prefix::Parse(text); }

coord::FilterRules TwoPolicies() {
  coord::FilterRules in;
  in.add_policies("runners-to-git");
  in.add_policies("no-db");
  in.set_default_action(coord::FILTER_ACTION_DENY);
  in.add_egress_prefixes("10.99.0.9/32");
  coord::FilterRule* allow = in.add_rules();
  allow->add_sources("10.99.0.2/32");
  allow->add_destinations("10.99.0.3/32");
  allow->add_destinations("fd99:99::3/128");
  allow->set_protocol(coord::FILTER_PROTOCOL_TCP);
  coord::PortRange* ssh = allow->add_ports();
  ssh->set_first(22);
  ssh->set_last(22);
  coord::PortRange* high = allow->add_ports();
  high->set_first(8000);
  high->set_last(8099);
  allow->set_action(coord::FILTER_ACTION_ALLOW);
  allow->set_policy(0);
  coord::FilterRule* deny = in.add_rules();
  deny->add_destinations("10.99.0.4/32");
  deny->set_protocol(coord::FILTER_PROTOCOL_ICMP);
  deny->set_action(coord::FILTER_ACTION_DENY);
  deny->set_policy(1);
  return in;
}

TEST(RuleSetFromProto, ConvertsEveryField) {
  absl::StatusOr<filter::RuleSet> set = RuleSetFromProto(TwoPolicies());
  ASSERT_TRUE(set.ok()) << set.status();
  filter::RuleSet want;
  want.policies = {"runners-to-git", "no-db"};
  want.default_action = filter::Action::kDeny;
  want.egress = {P("10.99.0.9/32")};
  filter::Rule allow;
  allow.sources = {P("10.99.0.2/32")};
  allow.destinations = {P("10.99.0.3/32"), P("fd99:99::3/128")};
  allow.protocol = filter::Protocol::kTcp;
  allow.ports = {{22, 22}, {8000, 8099}};
  allow.action = filter::Action::kAllow;
  allow.policy = 0;
  filter::Rule deny;
  deny.destinations = {P("10.99.0.4/32")};
  deny.protocol = filter::Protocol::kIcmp;
  deny.action = filter::Action::kDeny;
  deny.policy = 1;
  want.rules = {allow, deny};
  EXPECT_EQ(*set, want);
}

TEST(RuleSetFromProto, EmptyMeansDefaultDenyAndNoRules) {
  absl::StatusOr<filter::RuleSet> set = RuleSetFromProto(coord::FilterRules());
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->rules.empty());
  EXPECT_EQ(set->default_action, filter::Action::kDeny);
}

TEST(RuleSetFromProto, DefaultAllow) {
  coord::FilterRules in;
  in.set_default_action(coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(RuleSetFromProto(in)->default_action, filter::Action::kAllow);
}

TEST(RuleSetFromProto, ErrorsNameTheField) {
  struct Case {
    std::function<void(coord::FilterRules*)> spoil;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](coord::FilterRules* r) { r->mutable_rules(0)->set_sources(0, "10.99.0.300/32"); },
       "filter.rules[0].sources[0]"},
      {[](coord::FilterRules* r) { r->mutable_rules(1)->add_destinations("nonsense"); },
       "filter.rules[1].destinations[1]"},
      {[](coord::FilterRules* r) { r->set_egress_prefixes(0, "10.0.0.0/33"); },
       "filter.egress_prefixes[0]"},
      {[](coord::FilterRules* r) { r->mutable_rules(0)->mutable_ports(1)->set_last(70000); },
       "filter.rules[0].ports[1]"},
      {[](coord::FilterRules* r) { r->mutable_rules(0)->mutable_ports(0)->set_first(0); },
       "filter.rules[0].ports[0]"},
      {[](coord::FilterRules* r) { r->mutable_rules(0)->mutable_ports(1)->set_first(9000); },
       "filter.rules[0].ports[1]"},
      {[](coord::FilterRules* r) { r->mutable_rules(1)->add_ports()->set_first(1); },
       "filter.rules[1].ports"},
      {[](coord::FilterRules* r) { r->mutable_rules(1)->set_policy(2); }, "filter.rules[1].policy"},
      {[](coord::FilterRules* r) {
         r->mutable_rules(0)->set_protocol(static_cast<coord::FilterProtocol>(9));
       },
       "filter.rules[0].protocol"},
      {[](coord::FilterRules* r) {
         r->mutable_rules(1)->set_action(static_cast<coord::FilterAction>(5));
       },
       "filter.rules[1].action"},
      {[](coord::FilterRules* r) { r->set_default_action(static_cast<coord::FilterAction>(7)); },
       "filter.default_action"},
  };
  for (const Case& c : cases) {
    coord::FilterRules in = TwoPolicies();
    c.spoil(&in);
    absl::StatusOr<filter::RuleSet> set = RuleSetFromProto(in);
    ASSERT_FALSE(set.ok()) << c.field;
    EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(set.status().message(), HasSubstr(c.field + ":"));
  }
}

// Random ASCII bytes written over a valid message (ASCII keeps protobuf's UTF-8 check quiet) and
// parsed as a FilterRules: conversion answers with a value or an error, never crashes.
TEST(RuleSetFromProto, SurvivesRandomMessages) {
  // Bytes of a string field that cut into binary data make protobuf log each parse; not news here.
  google::protobuf::LogSilencer quiet;
  std::mt19937 rng(7);
  const std::string valid = TwoPolicies().SerializeAsString();
  for (int i = 0; i < 2000; ++i) {
    std::string bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng() % 128);
    coord::FilterRules in;
    if (!in.ParseFromString(bytes)) continue;
    (void)RuleSetFromProto(in);
  }
}

TEST(ParseExplainArgs, NamesAndAddresses) {
  absl::StatusOr<ExplainQuery> q = ParseExplainArgs("runner", "git:22/TCP");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->source, "runner");
  EXPECT_EQ(q->destination, "git");
  EXPECT_EQ(q->protocol, filter::Protocol::kTcp);
  EXPECT_EQ(q->port, 22);

  q = ParseExplainArgs("10.99.0.2", "10.99.0.4:5353/udp");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->destination, "10.99.0.4");
  EXPECT_EQ(q->protocol, filter::Protocol::kUdp);
  EXPECT_EQ(q->port, 5353);

  q = ParseExplainArgs("runner", "db/Icmp");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->destination, "db");
  EXPECT_EQ(q->protocol, filter::Protocol::kIcmp);
  EXPECT_EQ(q->port, 0);

  q = ParseExplainArgs("fd99:99::2", "[fd99:99::3]:443/tcp");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->destination, "fd99:99::3");
  EXPECT_EQ(q->port, 443);

  q = ParseExplainArgs("runner", "fd99:99::3/icmp");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->destination, "fd99:99::3");
}

TEST(ParseExplainArgs, BadArgumentsSayWhatToWrite) {
  struct Case {
    std::string source, destination, hint;
  };
  const std::vector<Case> cases = {
      {"runner", "git:22", "DST:PORT/tcp"},
      {"runner", "git:22/sctp", "not tcp, udp or icmp"},
      {"runner", "git/tcp", "git:PORT/tcp"},
      {"runner", "git:0/tcp", "1 to 65535"},
      {"runner", "git:65536/udp", "1 to 65535"},
      {"runner", "git:22x/tcp", "1 to 65535"},
      {"runner", "git:/tcp", "empty port"},
      {"runner", "git:7/icmp", "git/icmp"},
      {"runner", ":22/tcp", "DST is empty"},
      {"", "git:22/tcp", "SRC is empty"},
      {"runner", "[fd99::1:22/tcp", "[fd99::1]:22/tcp"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ExplainQuery> q = ParseExplainArgs(c.source, c.destination);
    ASSERT_FALSE(q.ok()) << c.destination;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(q.status().message(), HasSubstr(c.hint)) << c.destination;
  }
}

TEST(ExplainRequestLine, RoundTrips) {
  ExplainQuery q{"runner", "fd99:99::3", filter::Protocol::kUdp, 53};
  absl::StatusOr<ExplainQuery> back = ParseExplainRequestLine(ExplainRequestLine(q));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->source, q.source);
  EXPECT_EQ(back->destination, q.destination);
  EXPECT_EQ(back->protocol, q.protocol);
  EXPECT_EQ(back->port, q.port);
}

TEST(ExplainRequestLine, RejectsBadLines) {
  for (std::string_view line :
       {"explain", "explain ", "explain [1,2]", "explain {\"source\":\"a\"}", "status",
        "explain {\"source\":\"a\",\"destination\":\"b\",\"protocol\":\"tcp\",\"port\":70000}",
        "explain {\"source\":\"a\",\"destination\":\"b\",\"protocol\":\"gre\",\"port\":1}",
        "explain {\"source\":\"\",\"destination\":\"b\",\"protocol\":\"tcp\",\"port\":1}",
        "explain {\"source\":1,\"destination\":\"b\",\"protocol\":\"tcp\",\"port\":1}"}) {
    EXPECT_FALSE(ParseExplainRequestLine(line).ok()) << line;
  }
}

TEST(ExplainAnswer, JsonRoundTripAndText) {
  ExplainAnswer a;
  a.action = filter::Action::kAllow;
  a.policy = "runners-to-git";
  a.enforced_by = "git";
  a.source_ip = "10.99.0.2";
  a.destination_ip = "10.99.0.3";
  absl::StatusOr<ExplainAnswer> back = ExplainAnswerFromJson(ExplainAnswerJson(a).dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->action, a.action);
  EXPECT_EQ(back->policy, a.policy);
  EXPECT_EQ(back->enforced_by, a.enforced_by);
  const ExplainQuery q{"runner", "git", filter::Protocol::kTcp, 22};
  EXPECT_EQ(FormatExplainAnswer(q, *back),
            "allow runner (10.99.0.2) -> git (10.99.0.3) tcp/22 by PeerPolicy runners-to-git, "
            "enforced by git");

  ExplainAnswer d;
  d.enforced_by = "db";
  const ExplainQuery icmp{"10.99.0.2", "db", filter::Protocol::kIcmp, 0};
  EXPECT_EQ(FormatExplainAnswer(icmp, d),
            "deny 10.99.0.2 -> db icmp by the Mesh default (Deny), enforced by db");

  absl::StatusOr<ExplainAnswer> error = ExplainAnswerFromJson("{\"error\": \"no member x\"}");
  ASSERT_FALSE(error.ok());
  EXPECT_THAT(error.status().message(), HasSubstr("no member x"));
  EXPECT_FALSE(ExplainAnswerFromJson("nope").ok());
}

}  // namespace
}  // namespace tunnelmesh::policy
