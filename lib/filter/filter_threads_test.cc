// One Filter used as the data plane uses it: Inbound on one thread, Outbound on another, while a
// third swaps rule sets and reads the counters (label "threaded": the TSAN leg runs it).
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/filter/filter.h"
#include "lib/filter/testing/packets.h"

namespace tunnelmesh::filter {
namespace {

using testing::Ip;

std::shared_ptr<const Matcher> Rules(bool swapped) {
  RuleSet rs;
  rs.policies =
      swapped ? std::vector<std::string>{"dns", "ssh"} : std::vector<std::string>{"ssh", "dns"};
  const Prefix peer = Prefix::Parse("10.0.0.2/32").value();
  const Prefix us = Prefix::Parse("10.0.0.1/32").value();
  rs.rules.push_back({{peer}, {us}, Protocol::kTcp, {{22, 22}}, Action::kAllow, swapped ? 1u : 0u});
  rs.rules.push_back({{peer}, {us}, Protocol::kUdp, {{53, 53}}, Action::kAllow, swapped ? 0u : 1u});
  return std::make_shared<const Matcher>(std::move(rs));
}

TEST(FilterThreadsTest, InboundAndOutboundRunConcurrentlyWithSwaps) {
  const IpAddress us = Ip("10.0.0.1"), peer = Ip("10.0.0.2");
  Filter filter(Options{.max_flows = 4096});
  filter.SetRules(Rules(false));
  constexpr int kPackets = 20000;
  const MonoTime t0 = MonoTime{} + std::chrono::hours(1);

  // Built before the threads start: no allocation in the loops.
  std::vector<testing::Bytes> inbound, outbound;
  for (int i = 0; i < 500; ++i) {
    const uint16_t port = static_cast<uint16_t>(10000 + i);
    inbound.push_back(testing::Tcp(peer, us, port, 22, i % 2 ? kTcpAck : kTcpSyn));
    inbound.push_back(testing::Udp(peer, us, port, 53));
    outbound.push_back(testing::Tcp(us, peer, 22, port, kTcpSyn | kTcpAck));
    outbound.push_back(testing::Udp(us, peer, static_cast<uint16_t>(30000 + i), 9000));
  }

  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::thread in_thread([&] {
    for (int i = 0; i < kPackets; ++i) {
      if (!filter.Inbound(inbound[i % inbound.size()], t0 + std::chrono::microseconds(i))) {
        refused.fetch_add(1);
      }
    }
  });
  std::thread out_thread([&] {
    for (int i = 0; i < kPackets; ++i) {
      if (!filter.Outbound(outbound[i % outbound.size()], t0 + std::chrono::microseconds(i))) {
        refused.fetch_add(1);
      }
    }
  });
  std::thread control([&] {
    bool swapped = false;
    while (!done.load()) {
      swapped = !swapped;
      filter.SetRules(Rules(swapped));
      EXPECT_EQ(filter.policy_counts().size(), 3u);
      EXPECT_LE(filter.tracked_flows(), 4096u);
      std::this_thread::yield();
    }
  });
  in_thread.join();
  out_thread.join();
  done.store(true);
  control.join();

  // Both rule sets allow everything sent: nothing is refused whatever the interleaving.
  EXPECT_EQ(refused.load(), 0);
  for (size_t d = 0; d < static_cast<size_t>(Drop::kCount); ++d) {
    EXPECT_EQ(filter.drops().Get(static_cast<Drop>(d)), 0u) << DropName(static_cast<Drop>(d));
  }
  // 1000 inbound-started flows (or outbound-started, for ssh ports the reply reached first) and
  // 500 of ours.
  EXPECT_EQ(filter.tracked_flows(), 1500u);
  uint64_t allowed = 0;
  for (const PolicyCount& c : filter.policy_counts()) allowed += c.allowed;
  EXPECT_GT(allowed, 0u);
  EXPECT_LE(allowed, 2u * kPackets);
}

}  // namespace
}  // namespace tunnelmesh::filter
