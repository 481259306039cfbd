// Filter: connection tracking with a fake time (reply directions for TCP, UDP and ICMP echo, ICMP
// errors, each timeout, the bounded table), rule-set swaps, egress destinations, counters.
#include "lib/filter/filter.h"

#include <chrono>
#include <memory>

#include "gtest/gtest.h"
#include "lib/filter/l4.h"
#include "lib/filter/testing/packets.h"

namespace tunnelmesh::filter {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using testing::Bytes;
using testing::EchoReply;
using testing::EchoRequest;
using testing::Ip;
using testing::Tcp;
using testing::Udp;
using testing::Unreachable;

Prefix P(const char* text) { return Prefix::Parse(text).value(); }

const IpAddress kUs = Ip("10.0.0.1");
const IpAddress kPeer = Ip("10.0.0.2");
const IpAddress kOther = Ip("10.0.0.3");
const IpAddress kUs6 = Ip("fd00::1");
const IpAddress kPeer6 = Ip("fd00::2");
const MonoTime kT0 = MonoTime{} + hours(100);

// ssh: TCP 22 from the peer; dns: UDP 53 from the peer; telnet: deny TCP 23 from anyone.
RuleSet BaseRules() {
  RuleSet rs;
  rs.policies = {"ssh", "dns", "telnet"};
  rs.rules.push_back({{P("10.0.0.2/32"), P("fd00::2/128")},
                      {P("10.0.0.1/32"), P("fd00::1/128")},
                      Protocol::kTcp,
                      {{22, 22}},
                      Action::kAllow,
                      0});
  rs.rules.push_back(
      {{P("10.0.0.2/32")}, {P("10.0.0.1/32")}, Protocol::kUdp, {{53, 53}}, Action::kAllow, 1});
  rs.rules.push_back({{}, {}, Protocol::kTcp, {{23, 23}}, Action::kDeny, 2});
  return rs;
}

std::shared_ptr<const Matcher> Compile(RuleSet rs) {
  return std::make_shared<const Matcher>(std::move(rs));
}

class FilterTest : public ::testing::Test {
 protected:
  explicit FilterTest(const Options& o = {}) : filter_(o) {
    filter_.SetRules(Compile(BaseRules()));
  }

  bool In(const Bytes& p, MonoTime t = kT0) { return filter_.Inbound(p, t); }
  bool Out(const Bytes& p, MonoTime t = kT0) { return filter_.Outbound(p, t); }
  uint64_t Drops(Drop d) const { return filter_.drops().Get(d); }

  Filter filter_;
};

TEST_F(FilterTest, InboundTcpAllowedByRuleAndItsRepliesPass) {
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpSyn)));
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 22, 5000, kTcpSyn | kTcpAck)));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpAck)));
  EXPECT_EQ(filter_.tracked_flows(), 1u);
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5001, 80, kTcpSyn)));
  EXPECT_EQ(Drops(Drop::kDefaultDenied), 1u);
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5002, 23, kTcpSyn)));
  EXPECT_EQ(Drops(Drop::kPolicyDenied), 1u);
  // Another member may not use the peer's rule.
  EXPECT_FALSE(In(Tcp(kOther, kUs, 5000, 22, kTcpSyn)));
  // IPv6 too.
  EXPECT_TRUE(In(Tcp(kPeer6, kUs6, 5000, 22, kTcpSyn)));
  EXPECT_TRUE(Out(Tcp(kUs6, kPeer6, 22, 5000, kTcpSyn | kTcpAck)));
}

TEST_F(FilterTest, RepliesToFlowsWeStartedPassWithoutARule) {
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 40000, 80, kTcpSyn)));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 80, 40000, kTcpSyn | kTcpAck)));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 80, 40001, kTcpSyn | kTcpAck)));  // Not ours.
  EXPECT_TRUE(Out(Udp(kUs6, kPeer6, 5000, 9999)));
  EXPECT_TRUE(In(Udp(kPeer6, kUs6, 9999, 5000)));
  EXPECT_FALSE(In(Udp(kPeer6, kUs6, 9998, 5000)));
  // Outbound traffic to members that filter themselves is never refused.
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 40002, 23, kTcpSyn)));
  EXPECT_EQ(Drops(Drop::kPolicyDenied), 0u);
}

TEST_F(FilterTest, IcmpEchoRepliesMatchTheirRequestId) {
  EXPECT_TRUE(Out(EchoRequest(kUs, kPeer, 7)));
  EXPECT_TRUE(In(EchoReply(kPeer, kUs, 7)));
  EXPECT_FALSE(In(EchoReply(kPeer, kUs, 8)));
  EXPECT_FALSE(In(EchoRequest(kPeer, kUs, 9)));  // No ICMP rule: default deny.
  EXPECT_TRUE(Out(EchoRequest(kUs6, kPeer6, 7)));
  EXPECT_TRUE(In(EchoReply(kPeer6, kUs6, 7)));
  EXPECT_EQ(Drops(Drop::kDefaultDenied), 2u);
}

TEST_F(FilterTest, IcmpErrorsPassOnlyForTrackedFlows) {
  const Bytes sent = Udp(kUs, kPeer, 5000, 9999);
  EXPECT_TRUE(Out(sent));
  EXPECT_TRUE(In(Unreachable(kPeer, kUs, sent)));
  // From a router on the way (not the peer) too: it goes back to the quoted packet's sender.
  EXPECT_TRUE(In(Unreachable(kOther, kUs, sent)));
  EXPECT_FALSE(In(Unreachable(kPeer, kUs, Udp(kUs, kPeer, 5000, 1234))));
  // A quote that names a tracked flow but not the error's destination as its sender.
  EXPECT_FALSE(In(Unreachable(kPeer, kUs, Udp(kOther, kPeer, 5000, 9999))));
  // Errors about replies we sent in a flow the peer started.
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 6000, 22, kTcpSyn)));
  EXPECT_TRUE(In(Unreachable(kPeer, kUs, Tcp(kUs, kPeer, 22, 6000, kTcpSyn | kTcpAck))));
  // IPv6, about an echo request.
  const Bytes ping = EchoRequest(kUs6, kPeer6, 3);
  EXPECT_TRUE(Out(ping));
  EXPECT_TRUE(In(Unreachable(kPeer6, kUs6, ping)));
  EXPECT_FALSE(In(Unreachable(kPeer6, kUs6, EchoRequest(kUs6, kPeer6, 4))));
  EXPECT_EQ(Drops(Drop::kDefaultDenied), 3u);
  // Errors are never tracked.
  EXPECT_EQ(filter_.tracked_flows(), 3u);
}

TEST_F(FilterTest, TcpTimeouts) {
  // Handshake: transitory timeout (120 s).
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 1000, 80, kTcpSyn), kT0));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 80, 1000, kTcpSyn | kTcpAck), kT0 + seconds(121)));
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 1001, 80, kTcpSyn), kT0));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 80, 1001, kTcpSyn | kTcpAck), kT0 + seconds(119)));
  // Established: 2 h of silence is fine, a second more is not.
  const MonoTime t1 = kT0 + seconds(119);
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 80, 1001, kTcpAck), t1 + hours(2) - seconds(1)));
  const MonoTime t2 = t1 + hours(2) - seconds(1);
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 80, 1001, kTcpAck), t2 + hours(2) + seconds(1)));
  // FIN: back to the transitory timeout.
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 1002, 80, kTcpSyn), kT0));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 80, 1002, kTcpSyn | kTcpAck), kT0));
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 1002, 80, kTcpFin | kTcpAck), kT0));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 80, 1002, kTcpAck), kT0 + seconds(100)));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 80, 1002, kTcpAck), kT0 + seconds(100 + 121)));
}

TEST_F(FilterTest, UdpAndIcmpTimeouts) {
  // One-way UDP: 30 s.
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 5000, 7000), kT0));
  EXPECT_FALSE(In(Udp(kPeer, kUs, 7000, 5000), kT0 + seconds(31)));
  // With a reply seen: 180 s from the last packet.
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 5001, 7000), kT0));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 7000, 5001), kT0 + seconds(29)));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 7000, 5001), kT0 + seconds(29 + 179)));
  EXPECT_FALSE(In(Udp(kPeer, kUs, 7000, 5001), kT0 + seconds(29 + 179 + 181)));
  // Echo: 30 s.
  EXPECT_TRUE(Out(EchoRequest(kUs, kPeer, 1), kT0));
  EXPECT_TRUE(In(EchoReply(kPeer, kUs, 1), kT0 + seconds(29)));
  EXPECT_TRUE(Out(EchoRequest(kUs, kPeer, 2), kT0));
  EXPECT_FALSE(In(EchoReply(kPeer, kUs, 2), kT0 + seconds(31)));
  // ExpireFlows empties the table of what has expired.
  filter_.ExpireFlows(kT0 + hours(1));
  EXPECT_EQ(filter_.tracked_flows(), 0u);
}

class SmallTableTest : public FilterTest {
 protected:
  SmallTableTest() : FilterTest(Options{.max_flows = 2}) {}
};

TEST_F(SmallTableTest, FullTableRefusesNewFlowsUntilOnesExpire) {
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 1, 100), kT0));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 2, 53), kT0 + seconds(20)));
  EXPECT_FALSE(Out(Udp(kUs, kPeer, 3, 100), kT0 + seconds(20)));
  EXPECT_FALSE(In(Udp(kPeer, kUs, 4, 53), kT0 + seconds(20)));
  EXPECT_EQ(Drops(Drop::kTableFull), 2u);
  // Tracked flows still pass.
  EXPECT_TRUE(In(Udp(kPeer, kUs, 100, 1), kT0 + seconds(21)));
  // The second flow (30 s from 20 s) expires first: reclaimed for a new one.
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 5, 100), kT0 + seconds(51)));
  EXPECT_EQ(filter_.tracked_flows(), 2u);
  EXPECT_FALSE(Out(Udp(kUs, kPeer, 6, 100), kT0 + seconds(52)));
  EXPECT_EQ(Drops(Drop::kTableFull), 3u);
}

TEST_F(FilterTest, SwapCutsFlowsTheNewRulesDenyAndKeepsTheOthers) {
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpSyn)));
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 22, 5000, kTcpSyn | kTcpAck)));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 6000, 53)));
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 7000, 8080)));  // Ours: passes whatever the rules.
  EXPECT_EQ(filter_.tracked_flows(), 3u);

  RuleSet next = BaseRules();
  next.rules.erase(next.rules.begin());  // No more ssh.
  filter_.SetRules(Compile(next));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5000, 22, kTcpAck)));
  // Cut in both directions: our side's next packet neither passes nor revives the flow as ours.
  EXPECT_FALSE(Out(Tcp(kUs, kPeer, 22, 5000, kTcpAck)));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5000, 22, kTcpAck)));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 6000, 53)));
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 53, 6000)));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 8080, 7000)));
  EXPECT_EQ(Drops(Drop::kDefaultDenied), 3u);
  // The cut flow is remembered until both sides fall silent (TCP: the transitory timeout).
  filter_.ExpireFlows(kT0 + seconds(119));
  EXPECT_EQ(filter_.tracked_flows(), 3u);
  filter_.ExpireFlows(kT0 + seconds(121));
  EXPECT_EQ(filter_.tracked_flows(), 2u);

  // A reply is enough to re-decide too: the dns flow, cut from our side after the next swap.
  RuleSet none = BaseRules();
  none.rules.resize(0);
  filter_.SetRules(Compile(none));
  EXPECT_FALSE(Out(Udp(kUs, kPeer, 53, 6000)));
  EXPECT_FALSE(In(Udp(kPeer, kUs, 6000, 53)));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 8080, 7000)));

  // And a flow a rule set cut comes back when a later one allows it again.
  filter_.SetRules(Compile(BaseRules()));
  EXPECT_TRUE(In(Udp(kPeer, kUs, 6000, 53)));
}

TEST_F(FilterTest, EgressDestinationsAreCheckedOnSend) {
  RuleSet rs = BaseRules();
  rs.policies.push_back("to-static");
  rs.egress = {P("10.0.9.0/24")};
  rs.rules.push_back(
      {{P("10.0.0.1/32")}, {P("10.0.9.5/32")}, Protocol::kTcp, {{443, 443}}, Action::kAllow, 3});
  filter_.SetRules(Compile(rs));
  EXPECT_TRUE(Out(Tcp(kUs, Ip("10.0.9.5"), 1000, 443, kTcpSyn)));
  EXPECT_TRUE(In(Tcp(Ip("10.0.9.5"), kUs, 443, 1000, kTcpSyn | kTcpAck)));
  EXPECT_FALSE(Out(Tcp(kUs, Ip("10.0.9.5"), 1001, 80, kTcpSyn)));
  EXPECT_FALSE(Out(Tcp(kUs, Ip("10.0.9.6"), 1001, 443, kTcpSyn)));
  EXPECT_EQ(Drops(Drop::kDefaultDenied), 2u);
  // A malformed packet to an egress destination is dropped; elsewhere it is not our business.
  EXPECT_FALSE(Out(testing::IpPacket(kUs, Ip("10.0.9.5"), kIpProtoTcp, Bytes(3, 0))));
  EXPECT_TRUE(Out(testing::IpPacket(kUs, kPeer, kIpProtoTcp, Bytes(3, 0))));
  EXPECT_EQ(Drops(Drop::kMalformed), 1u);

  // The established flow is cut when the rule goes.
  rs.rules.pop_back();
  filter_.SetRules(Compile(rs));
  EXPECT_FALSE(Out(Tcp(kUs, Ip("10.0.9.5"), 1000, 443, kTcpAck)));
  EXPECT_FALSE(In(Tcp(Ip("10.0.9.5"), kUs, 443, 1000, kTcpAck)));
}

TEST_F(FilterTest, NullRulesTurnFilteringOff) {
  EXPECT_TRUE(Out(Udp(kUs, kPeer, 1, 2)));
  EXPECT_TRUE(filter_.enabled());
  filter_.SetRules(nullptr);
  EXPECT_FALSE(filter_.enabled());
  EXPECT_EQ(filter_.tracked_flows(), 0u);
  EXPECT_TRUE(In(Tcp(kOther, kUs, 1, 23, kTcpSyn)));
  EXPECT_TRUE(In(Bytes{0x45}));
  EXPECT_EQ(filter_.tracked_flows(), 0u);
  EXPECT_TRUE(filter_.policy_counts().empty());
  EXPECT_EQ(filter_.Explain({kOther, kUs, Protocol::kTcp, 23}).verdict.action, Action::kAllow);

  Filter fresh;
  EXPECT_FALSE(fresh.enabled());
  EXPECT_TRUE(fresh.Inbound(Tcp(kOther, kUs, 1, 23, kTcpSyn), kT0));
}

TEST_F(FilterTest, MalformedAndFragments) {
  EXPECT_FALSE(In(Bytes{0x45, 0, 0}));
  EXPECT_FALSE(In(testing::IpPacket(kPeer, kUs, kIpProtoTcp, Bytes(10, 0))));
  EXPECT_EQ(Drops(Drop::kMalformed), 2u);
  // A later fragment passes untracked (its first fragment was decided).
  EXPECT_TRUE(In(testing::IpPacket(kPeer, kUs, kIpProtoUdp, Bytes(100, 0), 185)));
  EXPECT_EQ(filter_.tracked_flows(), 0u);
}

TEST_F(FilterTest, PolicyCountsByNameSurviveSwaps) {
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpSyn)));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpAck)));
  EXPECT_TRUE(Out(Tcp(kUs, kPeer, 22, 5000, kTcpAck)));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5000, 23, kTcpSyn)));
  EXPECT_FALSE(In(Tcp(kPeer, kUs, 5000, 24, kTcpSyn)));
  auto counts = filter_.policy_counts();
  ASSERT_EQ(counts.size(), 4u);
  EXPECT_EQ(counts[0].policy, "ssh");
  EXPECT_EQ(counts[0].allowed, 3u);
  EXPECT_EQ(counts[2].policy, "telnet");
  EXPECT_EQ(counts[2].denied, 1u);
  EXPECT_EQ(counts[3].policy, "");
  EXPECT_EQ(counts[3].denied, 1u);

  // ssh moves to another index; dns goes away.
  RuleSet rs = BaseRules();
  rs.policies = {"new", "ssh"};
  rs.rules.resize(1);
  rs.rules[0].policy = 1;
  filter_.SetRules(Compile(rs));
  EXPECT_TRUE(In(Tcp(kPeer, kUs, 5000, 22, kTcpAck)));
  counts = filter_.policy_counts();
  ASSERT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts[0].policy, "new");
  EXPECT_EQ(counts[0].allowed, 0u);
  EXPECT_EQ(counts[1].policy, "ssh");
  EXPECT_EQ(counts[1].allowed, 4u);
  EXPECT_EQ(counts[2].denied, 1u);
}

// A bulk transfer takes the stream fast path after its first steady packet: its packets are
// still counted exactly, keep renewing their entry's expiry, and stop at once when a swap denies
// the flow or the entry goes away.
TEST(FilterStreamTest, StreamsAreCountedRenewedAndCut) {
  Options o;
  o.tcp_established_timeout = seconds(10);
  Filter filter(o);
  filter.SetRules(Compile(BaseRules()));
  MonoTime t = kT0;
  ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5000, 22, kTcpSyn), t));
  ASSERT_TRUE(filter.Outbound(Tcp(kUs, kPeer, 22, 5000, kTcpSyn | kTcpAck), t));
  // A minute of data in both directions, a packet each way every 100 ms: far longer than the
  // 10 s timeout, so the fast path must renew the entry.
  uint64_t sent = 2;
  for (int i = 0; i < 600; ++i) {
    t += std::chrono::milliseconds(100);
    ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5000, 22, kTcpAck), t)) << i;
    ASSERT_TRUE(filter.Outbound(Tcp(kUs, kPeer, 22, 5000, kTcpAck), t)) << i;
    sent += 2;
  }
  auto counts = filter.policy_counts();
  ASSERT_EQ(counts[0].policy, "ssh");
  EXPECT_EQ(counts[0].allowed, sent);
  // Counting flushed the stream; the next packets pass and are counted again.
  ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5000, 22, kTcpAck), t));
  ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5000, 22, kTcpAck), t));
  EXPECT_EQ(filter.policy_counts()[0].allowed, sent + 2);

  // A flow this member started, whose replies pass only while it is tracked: 11 s of silence
  // expire it, even though its last packets took the fast path.
  ASSERT_TRUE(filter.Outbound(Tcp(kUs, kPeer, 6000, 80, kTcpSyn), t));
  ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 80, 6000, kTcpSyn | kTcpAck), t));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 80, 6000, kTcpAck), t));
  EXPECT_FALSE(filter.Inbound(Tcp(kPeer, kUs, 80, 6000, kTcpAck), t + seconds(11)));

  // A swap that no longer allows ssh cuts the stream at its next packet.
  t += seconds(12);
  ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5001, 22, kTcpSyn), t));
  ASSERT_TRUE(filter.Outbound(Tcp(kUs, kPeer, 22, 5001, kTcpSyn | kTcpAck), t));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(filter.Inbound(Tcp(kPeer, kUs, 5001, 22, kTcpAck), t));
  RuleSet no_ssh = BaseRules();
  no_ssh.rules.erase(no_ssh.rules.begin());
  filter.SetRules(Compile(no_ssh));
  EXPECT_FALSE(filter.Inbound(Tcp(kPeer, kUs, 5001, 22, kTcpAck), t));
  EXPECT_FALSE(filter.Outbound(Tcp(kUs, kPeer, 22, 5001, kTcpAck), t));
}

TEST_F(FilterTest, ExplainNamesThePolicy) {
  Explanation e = filter_.Explain({kPeer, kUs, Protocol::kTcp, 22});
  EXPECT_EQ(e.verdict.action, Action::kAllow);
  EXPECT_EQ(e.policy, "ssh");
  e = filter_.Explain({kPeer, kUs, Protocol::kTcp, 23});
  EXPECT_EQ(e.verdict.action, Action::kDeny);
  EXPECT_EQ(e.policy, "telnet");
  e = filter_.Explain({kPeer, kUs, Protocol::kUdp, 22});
  EXPECT_EQ(e.verdict.action, Action::kDeny);
  EXPECT_EQ(e.verdict.policy, Verdict::kDefault);
  EXPECT_EQ(e.policy, "");
  EXPECT_EQ(filter_.drops().Get(Drop::kDefaultDenied), 0u);  // Explaining is not filtering.
}

}  // namespace
}  // namespace tunnelmesh::filter
