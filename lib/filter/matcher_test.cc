// The Matcher against a naive reference that scans every rule, on seeded random rule sets and
// flows (IPv4 and IPv6, overlapping prefixes, port ranges, deny and allow mixed), in both of its
// modes (cross-product tables, and the bitset fallback forced by a zero table budget).
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "lib/filter/filter.h"
#include "lib/filter/testing/packets.h"

namespace tunnelmesh::filter {
namespace {

using testing::Ip;

// The semantics of filter.h, one rule at a time.
bool RuleMatches(const Rule& r, const FlowKey& f) {
  auto in = [](const std::vector<Prefix>& prefixes, const IpAddress& a) {
    if (prefixes.empty()) return true;
    for (const Prefix& p : prefixes) {
      if (p.address().family() == a.family() && p.Contains(a)) return true;
    }
    return false;
  };
  if (!in(r.sources, f.source) || !in(r.destinations, f.destination)) return false;
  if (r.protocol != Protocol::kAny && r.protocol != f.protocol) return false;
  if ((f.protocol == Protocol::kTcp || f.protocol == Protocol::kUdp) && !r.ports.empty()) {
    for (const PortRange& p : r.ports) {
      if (f.destination_port >= p.first && f.destination_port <= p.last) return true;
    }
    return false;
  }
  return true;
}

Verdict Reference(const RuleSet& rs, const FlowKey& f) {
  for (const Rule& r : rs.rules) {
    if (r.action == Action::kDeny && RuleMatches(r, f)) return {Action::kDeny, r.policy};
  }
  for (const Rule& r : rs.rules) {
    if (r.action == Action::kAllow && RuleMatches(r, f)) return {Action::kAllow, r.policy};
  }
  return {rs.default_action};
}

// Addresses drawn near a few bases so that prefixes overlap and flows hit them.
class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  uint32_t Below(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng_); }

  IpAddress Address(bool v6) {
    static const char* kV4[] = {"10.0.0.0",    "10.0.1.0", "10.1.0.0",
                                "192.168.5.0", "0.0.0.0",  "255.255.255.0"};
    static const char* kV6[] = {"fd00::",     "fd00::1:0", "fd00:1::",
                                "2001:db8::", "::",        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:0"};
    uint8_t b[16];
    const IpAddress base = Ip(v6 ? kV6[Below(6)] : kV4[Below(6)]);
    for (int i = 0; i < 16; ++i) b[i] = base.bytes()[i];
    // Vary the last byte (often), or a middle byte (sometimes).
    b[v6 ? 15 : 3] = static_cast<uint8_t>(Below(4) == 0 ? Below(256) : Below(8));
    if (Below(8) == 0) b[v6 ? 7 : 2] = static_cast<uint8_t>(Below(256));
    return v6 ? IpAddress::V6(b) : IpAddress::V4(b);
  }

  Prefix RandomPrefix(bool v6) {
    const int bits = v6 ? 128 : 32;
    static const int kLengths[] = {0, 8, 16, 23, 24, 25, 30, 31, 32};
    int length = kLengths[Below(9)];
    if (v6) length = length == 32 ? 128 : length * 4;
    if (Below(6) == 0) length = static_cast<int>(Below(bits + 1));
    return Prefix(Address(v6), length);
  }

  uint16_t Port() {
    static const uint16_t kPorts[] = {0, 1, 22, 53, 80, 443, 1000, 8080, 65534, 65535};
    return Below(3) == 0 ? static_cast<uint16_t>(Below(65536)) : kPorts[Below(10)];
  }

  Rule RandomRule(uint32_t policies) {
    Rule r;
    const uint32_t families = Below(4);  // 0: v4, 1: v6, 2: both, 3: any (empty).
    auto prefixes = [&](std::vector<Prefix>& out) {
      if (families == 3 || Below(5) == 0) return;
      const uint32_t n = 1 + Below(3);
      for (uint32_t i = 0; i < n; ++i) {
        out.push_back(RandomPrefix(families == 1 || (families == 2 && Below(2) == 0)));
      }
    };
    prefixes(r.sources);
    prefixes(r.destinations);
    r.protocol = static_cast<Protocol>(Below(4));
    if (Below(2) == 0) {
      const uint32_t n = 1 + Below(3);
      for (uint32_t i = 0; i < n; ++i) {
        uint16_t a = Port(), b = Port();
        if (a > b && Below(8) != 0) std::swap(a, b);  // Now and then an empty range.
        r.ports.push_back({a, b});
      }
    }
    r.action = Below(3) == 0 ? Action::kDeny : Action::kAllow;
    r.policy = Below(policies);
    return r;
  }

  RuleSet RandomRuleSet(size_t rules) {
    RuleSet rs;
    const uint32_t policies = 1 + Below(8);
    for (uint32_t i = 0; i < policies; ++i) rs.policies.push_back("p" + std::to_string(i));
    for (size_t i = 0; i < rules; ++i) rs.rules.push_back(RandomRule(policies));
    rs.default_action = Below(2) == 0 ? Action::kDeny : Action::kAllow;
    return rs;
  }

  FlowKey RandomFlow() {
    FlowKey f;
    const bool v6 = Below(2) == 0;
    f.source = Address(v6);
    f.destination = Address(v6);
    f.protocol = static_cast<Protocol>(Below(4));
    f.destination_port = Port();
    return f;
  }

 private:
  std::mt19937 rng_;
};

void ExpectSameAsReference(const RuleSet& rs, const MatcherLimits& limits, Generator& gen,
                           int flows, std::optional<bool> expect_cross_product) {
  const Matcher m(rs, limits);
  if (expect_cross_product.has_value()) {
    EXPECT_EQ(m.uses_cross_product(), *expect_cross_product);
  }
  for (int i = 0; i < flows; ++i) {
    const FlowKey f = gen.RandomFlow();
    const Verdict want = Reference(rs, f);
    const Verdict got = m.Decide(f);
    ASSERT_EQ(got.action, want.action) << f.source.ToString() << " -> " << f.destination.ToString()
                                       << " proto " << static_cast<int>(f.protocol) << " port "
                                       << f.destination_port << " rules " << rs.rules.size();
    ASSERT_EQ(got.policy, want.policy) << f.source.ToString() << " -> " << f.destination.ToString();
  }
}

TEST(MatcherTest, AgreesWithReferenceOnRandomRuleSets) {
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    SCOPED_TRACE(seed);
    Generator gen(seed);
    static const size_t kSizes[] = {0, 1, 3, 10, 40, 150};
    const RuleSet rs = gen.RandomRuleSet(kSizes[seed % 6]);
    ExpectSameAsReference(rs, MatcherLimits{}, gen, 1500, true);
    ExpectSameAsReference(rs, MatcherLimits{.max_table_cells = 0}, gen, 1500, false);
  }
}

TEST(MatcherTest, AgreesWithReferenceOnALargeRuleSet) {
  Generator gen(4242);
  const RuleSet rs = gen.RandomRuleSet(300);
  // Unrelated random sources and destinations may exceed the default table budget.
  ExpectSameAsReference(rs, MatcherLimits{}, gen, 4000, std::nullopt);
  ExpectSameAsReference(rs, MatcherLimits{.max_table_cells = size_t{1} << 28}, gen, 4000, true);
  ExpectSameAsReference(rs, MatcherLimits{.max_table_cells = 0}, gen, 4000, false);
}

Rule MakeRule(std::vector<Prefix> sources, std::vector<Prefix> destinations, Protocol protocol,
              std::vector<PortRange> ports, Action action, uint32_t policy) {
  return Rule{
      std::move(sources), std::move(destinations), protocol, std::move(ports), action, policy};
}

Prefix P(const char* text) { return Prefix::Parse(text).value(); }

TEST(MatcherTest, DenyWinsOverAnEarlierAllow) {
  RuleSet rs;
  rs.policies = {"allow-all", "deny-ssh"};
  rs.rules.push_back(MakeRule({}, {}, Protocol::kAny, {}, Action::kAllow, 0));
  rs.rules.push_back(
      MakeRule({P("10.0.0.0/24")}, {}, Protocol::kTcp, {{22, 22}}, Action::kDeny, 1));
  const Matcher m(rs);
  const Verdict ssh = m.Decide({Ip("10.0.0.5"), Ip("10.0.1.1"), Protocol::kTcp, 22});
  EXPECT_EQ(ssh.action, Action::kDeny);
  EXPECT_EQ(ssh.policy, 1u);
  const Verdict web = m.Decide({Ip("10.0.0.5"), Ip("10.0.1.1"), Protocol::kTcp, 80});
  EXPECT_EQ(web.action, Action::kAllow);
  EXPECT_EQ(web.policy, 0u);
  const Verdict other = m.Decide({Ip("10.0.2.5"), Ip("10.0.1.1"), Protocol::kTcp, 22});
  EXPECT_EQ(other.action, Action::kAllow);
}

TEST(MatcherTest, FamiliesDoNotMixAndEmptyMeansBoth) {
  RuleSet rs;
  rs.policies = {"v4", "any"};
  rs.rules.push_back(MakeRule({P("0.0.0.0/0")}, {}, Protocol::kUdp, {}, Action::kAllow, 0));
  rs.rules.push_back(MakeRule({}, {P("fd00::/64")}, Protocol::kIcmp, {}, Action::kAllow, 1));
  const Matcher m(rs);
  EXPECT_EQ(m.Decide({Ip("1.2.3.4"), Ip("10.0.0.1"), Protocol::kUdp, 53}).policy, 0u);
  EXPECT_EQ(m.Decide({Ip("fd00::2"), Ip("fd00::1"), Protocol::kUdp, 53}).action, Action::kDeny);
  EXPECT_EQ(m.Decide({Ip("fd01::2"), Ip("fd00::1"), Protocol::kIcmp, 0}).policy, 1u);
  EXPECT_EQ(m.Decide({Ip("1.2.3.4"), Ip("10.0.0.1"), Protocol::kIcmp, 0}).policy,
            Verdict::kDefault);
}

TEST(MatcherTest, PortsApplyToTcpAndUdpOnly) {
  RuleSet rs;
  rs.policies = {"p"};
  rs.rules.push_back(MakeRule({}, {}, Protocol::kAny, {{1000, 2000}}, Action::kAllow, 0));
  const Matcher m(rs);
  EXPECT_EQ(m.Decide({Ip("1.1.1.1"), Ip("2.2.2.2"), Protocol::kTcp, 1500}).action, Action::kAllow);
  EXPECT_EQ(m.Decide({Ip("1.1.1.1"), Ip("2.2.2.2"), Protocol::kUdp, 2001}).action, Action::kDeny);
  EXPECT_EQ(m.Decide({Ip("1.1.1.1"), Ip("2.2.2.2"), Protocol::kIcmp, 0}).action, Action::kAllow);
  EXPECT_EQ(m.Decide({Ip("1.1.1.1"), Ip("2.2.2.2"), Protocol::kAny, 0}).action, Action::kAllow);
}

TEST(MatcherTest, EgressPrefixes) {
  RuleSet rs;
  rs.egress = {P("10.9.0.0/24"), P("10.9.0.128/25"), P("fd09::5/128"), P("10.9.1.0/24")};
  const Matcher m(rs);
  EXPECT_TRUE(m.IsEgress(Ip("10.9.0.0")));
  EXPECT_TRUE(m.IsEgress(Ip("10.9.1.255")));
  EXPECT_FALSE(m.IsEgress(Ip("10.9.2.0")));
  EXPECT_FALSE(m.IsEgress(Ip("10.8.255.255")));
  EXPECT_TRUE(m.IsEgress(Ip("fd09::5")));
  EXPECT_FALSE(m.IsEgress(Ip("fd09::6")));
  EXPECT_FALSE(Matcher(RuleSet{}).IsEgress(Ip("0.0.0.0")));
}

}  // namespace
}  // namespace tunnelmesh::filter
