// Per-packet cost of the packet filter (lib/filter) on realistic rule sets of 10, 1,000 and
// 10,000 rules: the Matcher's decision for a new flow, with a linear scan of the same rules as
// the baseline measured in the same run; the connection-tracking hit path (Filter::Inbound on a
// packet of a tracked flow: parse, table lookup, counters); a denied new flow through
// Filter::Inbound; and the Matcher's build time and table size.
// Run: build-release/bin/filter_bench; results go to docs/benchmarks.md.
//
// A rule set as the coordinator would compile it for one member of a large mesh: each rule lets
// one to three other members (their mesh IPv4 /32 or IPv6 /128, now and then a /24 or /64 of
// them) reach this member's two addresses on one port or a port range, TCP or UDP; one rule in
// twenty denies. Flows come from members of the same pool to the same ports, so most hit a rule.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "lib/filter/filter.h"
#include "lib/filter/l4.h"
#include "lib/filter/testing/packets.h"

namespace tunnelmesh::filter {
namespace {

constexpr int kMembers = 5000;
constexpr uint16_t kPorts[] = {22, 53, 80, 443, 5432, 6379, 8080, 8443, 9090, 9100};

IpAddress MemberV4(int i) {
  return IpAddress::V4(0x0a2a0000u + static_cast<uint32_t>(i));  // 10.42.0.0/16
}

IpAddress MemberV6(int i) {
  uint8_t b[16] = {0xfd, 0x42};
  b[14] = static_cast<uint8_t>(i >> 8);
  b[15] = static_cast<uint8_t>(i);
  return IpAddress::V6(b);
}

// `unrelated`: each rule's destinations are one or two other members too (no longer this
// member's own addresses): a rule set whose sources and destinations are both large and
// unrelated, the Matcher's worst case (it falls back to bitset intersection).
RuleSet MeshRules(int count, uint32_t seed, bool unrelated = false) {
  std::mt19937 rng(seed);
  auto below = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  RuleSet rs;
  const int policies = std::max(1, count / 10);
  for (int i = 0; i < policies; ++i) rs.policies.push_back("policy-" + std::to_string(i));
  const std::vector<Prefix> us = {Prefix(MemberV4(1), 32), Prefix(MemberV6(1), 128)};
  for (int i = 0; i < count; ++i) {
    Rule r;
    const int sources = 1 + below(3);
    for (int s = 0; s < sources; ++s) {
      const int m = 2 + below(kMembers);
      switch (below(10)) {
        case 0:
          r.sources.push_back(Prefix(MemberV4(m), 24));
          break;
        case 1:
          r.sources.push_back(Prefix(MemberV6(m), 120));
          break;
        case 2:
        case 3:
          r.sources.push_back(Prefix(MemberV6(m), 128));
          break;
        default:
          r.sources.push_back(Prefix(MemberV4(m), 32));
      }
    }
    r.destinations = us;
    if (unrelated) {
      r.destinations = {Prefix(MemberV4(2 + below(kMembers)), 32)};
      if (below(2) == 0) r.destinations.push_back(Prefix(MemberV6(2 + below(kMembers)), 128));
    }
    r.protocol = below(4) == 0 ? Protocol::kUdp : Protocol::kTcp;
    const uint16_t port = kPorts[below(10)];
    if (below(8) == 0) {
      const uint16_t first = static_cast<uint16_t>(1024 + below(60000));
      r.ports.push_back({first, static_cast<uint16_t>(first + below(100))});
    } else {
      r.ports.push_back({port, port});
    }
    r.action = below(20) == 0 ? Action::kDeny : Action::kAllow;
    r.policy = static_cast<uint32_t>(below(policies));
    rs.rules.push_back(std::move(r));
  }
  return rs;
}

std::vector<FlowKey> MeshFlows(size_t count, uint32_t seed, bool unrelated = false) {
  std::mt19937 rng(seed);
  auto below = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  std::vector<FlowKey> flows;
  for (size_t i = 0; i < count; ++i) {
    FlowKey f;
    const int m = 2 + below(kMembers);
    const bool v6 = below(3) == 0;
    f.source = v6 ? MemberV6(m) : MemberV4(m);
    const int to = unrelated ? 2 + below(kMembers) : 1;
    f.destination = v6 ? MemberV6(to) : MemberV4(to);
    f.protocol = below(4) == 0 ? Protocol::kUdp : Protocol::kTcp;
    f.destination_port = below(8) == 0 ? static_cast<uint16_t>(below(65536)) : kPorts[below(10)];
    flows.push_back(f);
  }
  return flows;
}

bool Matches(const Rule& r, const FlowKey& f) {
  auto in = [](const std::vector<Prefix>& prefixes, const IpAddress& a) {
    if (prefixes.empty()) return true;
    for (const Prefix& p : prefixes) {
      if (p.address().family() == a.family() && p.Contains(a)) return true;
    }
    return false;
  };
  if (r.protocol != Protocol::kAny && r.protocol != f.protocol) return false;
  if (!in(r.sources, f.source) || !in(r.destinations, f.destination)) return false;
  if (r.ports.empty()) return true;
  for (const PortRange& p : r.ports) {
    if (f.destination_port >= p.first && f.destination_port <= p.last) return true;
  }
  return false;
}

// Baseline: every rule scanned (deny pass, then allow pass), as a naive filter would.
Verdict LinearDecide(const RuleSet& rs, const FlowKey& f) {
  for (const Rule& r : rs.rules) {
    if (r.action == Action::kDeny && Matches(r, f)) return {Action::kDeny, r.policy};
  }
  for (const Rule& r : rs.rules) {
    if (r.action == Action::kAllow && Matches(r, f)) return {Action::kAllow, r.policy};
  }
  return {rs.default_action};
}

void BM_MatcherDecide(benchmark::State& state) {
  const Matcher m(MeshRules(static_cast<int>(state.range(0)), 1));
  const std::vector<FlowKey> flows = MeshFlows(4096, 2);
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    const Verdict v = m.Decide(flows[i++ & 4095]);
    allowed += v.action == Action::kAllow;
    benchmark::DoNotOptimize(v);
  }
  state.counters["cross_product"] = m.uses_cross_product();
  state.counters["allowed_share"] =
      static_cast<double>(allowed) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_MatcherDecide)->Arg(10)->Arg(1000)->Arg(10000);

void BM_LinearBaseline(benchmark::State& state) {
  const RuleSet rs = MeshRules(static_cast<int>(state.range(0)), 1);
  const std::vector<FlowKey> flows = MeshFlows(4096, 2);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(LinearDecide(rs, flows[i++ & 4095]));
}
BENCHMARK(BM_LinearBaseline)->Arg(10)->Arg(1000)->Arg(10000);

void BM_MatcherBuild(benchmark::State& state) {
  const RuleSet rs = MeshRules(static_cast<int>(state.range(0)), 1);
  size_t bytes = 0;
  for (auto _ : state) {
    const Matcher m(rs);
    bytes = m.table_bytes();
    benchmark::DoNotOptimize(bytes);
  }
  state.counters["table_bytes"] = static_cast<double>(bytes);
  state.SetLabel("ms per build in Time");
}
BENCHMARK(BM_MatcherBuild)->Arg(10)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

// The worst case: sources and destinations both many and unrelated.
void BM_MatcherDecideUnrelated(benchmark::State& state) {
  const Matcher m(MeshRules(static_cast<int>(state.range(0)), 1, true));
  const std::vector<FlowKey> flows = MeshFlows(4096, 2, true);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(m.Decide(flows[i++ & 4095]));
  state.counters["cross_product"] = m.uses_cross_product();
  state.counters["table_bytes"] = static_cast<double>(m.table_bytes());
}
BENCHMARK(BM_MatcherDecideUnrelated)->Arg(10000);

void BM_MatcherBuildUnrelated(benchmark::State& state) {
  const RuleSet rs = MeshRules(static_cast<int>(state.range(0)), 1, true);
  for (auto _ : state) benchmark::DoNotOptimize(Matcher(rs).table_bytes());
}
BENCHMARK(BM_MatcherBuildUnrelated)->Arg(10000)->Unit(benchmark::kMillisecond);

// Packets of flows the table already tracks (inbound TCP ACKs of 1,000 allowed connections).
void BM_ConntrackHit(benchmark::State& state) {
  const RuleSet rs = MeshRules(static_cast<int>(state.range(0)), 1);
  const auto matcher = std::make_shared<const Matcher>(rs);
  Filter filter;
  filter.SetRules(matcher);
  const MonoTime now = MonoTime{} + std::chrono::hours(1);
  std::vector<testing::Bytes> packets;
  for (const FlowKey& f : MeshFlows(20000, 3)) {
    if (packets.size() == 1000) break;
    if (f.protocol != Protocol::kTcp || matcher->Decide(f).action != Action::kAllow) continue;
    const uint16_t port = static_cast<uint16_t>(20000 + packets.size());
    if (!filter.Inbound(testing::Tcp(f.source, f.destination, port, f.destination_port, kTcpSyn),
                        now)) {
      continue;
    }
    packets.push_back(testing::Tcp(f.source, f.destination, port, f.destination_port, kTcpAck));
  }
  size_t i = 0, passed = 0;
  for (auto _ : state) passed += filter.Inbound(packets[i++ % packets.size()], now);
  if (passed != static_cast<size_t>(state.iterations()))
    state.SkipWithError("a tracked packet was refused");
  state.counters["flows"] = static_cast<double>(filter.tracked_flows());
}
BENCHMARK(BM_ConntrackHit)->Arg(10000);

// One bulk TCP stream, as iperf3 makes it: the same established flow packet after packet (the
// stream fast path; every refresh interval one packet takes the full hit path).
void BM_ConntrackStream(benchmark::State& state) {
  const RuleSet rs = MeshRules(static_cast<int>(state.range(0)), 1);
  const auto matcher = std::make_shared<const Matcher>(rs);
  Filter filter;
  filter.SetRules(matcher);
  const MonoTime now = MonoTime{} + std::chrono::hours(1);
  testing::Bytes packet;
  for (const FlowKey& f : MeshFlows(20000, 3)) {
    if (f.protocol != Protocol::kTcp || matcher->Decide(f).action != Action::kAllow) continue;
    if (!filter.Inbound(testing::Tcp(f.source, f.destination, 20000, f.destination_port, kTcpSyn),
                        now) ||
        !filter.Outbound(
            testing::Tcp(f.destination, f.source, f.destination_port, 20000, kTcpSyn | kTcpAck),
            now)) {
      continue;
    }
    packet = testing::Tcp(f.source, f.destination, 20000, f.destination_port, kTcpAck);
    break;
  }
  if (packet.empty()) {
    state.SkipWithError("no allowed TCP flow among the generated ones");
    return;
  }
  size_t passed = 0;
  for (auto _ : state) passed += filter.Inbound(packet, now);
  if (passed != static_cast<size_t>(state.iterations()))
    state.SkipWithError("a tracked packet was refused");
}
BENCHMARK(BM_ConntrackStream)->Arg(10000);

// New flows the rules deny (parse, table miss, decision, counters; nothing is inserted).
void BM_FilterInboundDenied(benchmark::State& state) {
  const auto matcher =
      std::make_shared<const Matcher>(MeshRules(static_cast<int>(state.range(0)), 1));
  Filter filter;
  filter.SetRules(matcher);
  std::vector<testing::Bytes> packets;
  for (const FlowKey& f : MeshFlows(20000, 4)) {
    if (packets.size() == 1000) break;
    if (f.protocol != Protocol::kTcp || matcher->Decide(f).action != Action::kDeny) continue;
    packets.push_back(testing::Tcp(f.source, f.destination, 20000, f.destination_port, kTcpSyn));
  }
  const MonoTime now = MonoTime{} + std::chrono::hours(1);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(filter.Inbound(packets[i++ % packets.size()], now));
}
BENCHMARK(BM_FilterInboundDenied)->Arg(10000);

}  // namespace
}  // namespace tunnelmesh::filter

int main(int argc, char** argv) {
  // As the agent does (node-agent/main.cc): abseil's deadlock detector costs a graph lookup per
  // lock, which would dominate the conntrack hit path here but is not paid in the agent.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
