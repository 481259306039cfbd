// FakeNetwork and FakeUdpBind: delivery with and without latency, seeded loss, cut links,
// unreachable destinations, bounded inboxes and the eventfd that tells a poller datagrams wait.
#include "node-agent/transport/testing/fake_network.h"

#include <poll.h>

#include <string>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"

namespace tunnelmesh {
namespace {

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

bool Readable(const Bind& bind) {
  pollfd p{bind.readable_fd(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

void SendText(Bind& bind, const Endpoint& to, const std::string& text) {
  const OutgoingDatagram d{reinterpret_cast<const uint8_t*>(text.data()), text.size(), to};
  EXPECT_EQ(bind.Send(absl::Span<const OutgoingDatagram>(&d, 1)), 0u);
}

// Everything `bind` has now, as (source, text).
std::vector<std::pair<std::string, std::string>> Drain(Bind& bind) {
  std::vector<std::pair<std::string, std::string>> out;
  while (Readable(bind)) {
    absl::StatusOr<size_t> n = bind.Receive([&](absl::Span<uint8_t> b, const TransportEndpoint& f) {
      out.emplace_back(f.ToString(), std::string(b.begin(), b.end()));
    });
    EXPECT_TRUE(n.ok());
  }
  return out;
}

TEST(FakeNetworkTest, DeliversAtOnceWithoutLatency) {
  FakeClock clock;
  FakeNetwork net(&clock);
  FakeUdpBind a(&net, Ep("192.0.2.1:1000")), b(&net, Ep("192.0.2.2:2000"));
  EXPECT_FALSE(Readable(b));
  SendText(a, b.local(), "hello");
  SendText(a, b.local(), "again");
  EXPECT_TRUE(Readable(b));
  auto got = Drain(b);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], std::make_pair(std::string("192.0.2.1:1000"), std::string("hello")));
  EXPECT_EQ(got[1].second, "again");
  EXPECT_FALSE(Readable(b)) << "the descriptor clears once everything was received";
  EXPECT_EQ(b.port(), 2000);
}

TEST(FakeNetworkTest, LatencyHoldsDatagramsUntilTheClockReachesThem) {
  FakeClock clock;
  FakeNetwork net(&clock, {.latency = std::chrono::milliseconds(30)});
  FakeUdpBind a(&net, Ep("192.0.2.1:1000")), b(&net, Ep("192.0.2.2:2000"));
  SendText(a, b.local(), "late");
  EXPECT_EQ(net.DeliverDue(), 0u);
  clock.Advance(std::chrono::milliseconds(29));
  EXPECT_EQ(net.DeliverDue(), 0u);
  EXPECT_FALSE(Readable(b));
  clock.Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(net.DeliverDue(), 1u);
  EXPECT_EQ(Drain(b).size(), 1u);
}

TEST(FakeNetworkTest, SeededLossIsRepeatableAndRoughlyTheRate) {
  auto run = [](uint64_t seed) {
    FakeClock clock;
    FakeNetwork net(&clock, {.loss = 0.25, .seed = seed});
    FakeUdpBind a(&net, Ep("192.0.2.1:1000")), b(&net, Ep("192.0.2.2:2000"));
    for (int i = 0; i < 1000; ++i) SendText(a, b.local(), std::to_string(i));
    return Drain(b);
  };
  auto first = run(7), second = run(7), other = run(8);
  EXPECT_EQ(first, second) << "same seed, same losses";
  EXPECT_NE(first, other);
  EXPECT_GT(first.size(), 700u);
  EXPECT_LT(first.size(), 800u);
}

TEST(FakeNetworkTest, CutLinksDropBothWaysUntilRestored) {
  FakeClock clock;
  FakeNetwork net(&clock);
  FakeUdpBind a(&net, Ep("192.0.2.1:1000")), b(&net, Ep("192.0.2.2:2000")),
      c(&net, Ep("192.0.2.3:3000"));
  net.Cut(a.local().address(), b.local().address());
  SendText(a, b.local(), "x");
  SendText(b, a.local(), "y");
  SendText(a, c.local(), "z");
  EXPECT_TRUE(Drain(a).empty());
  EXPECT_TRUE(Drain(b).empty());
  EXPECT_EQ(Drain(c).size(), 1u) << "only the cut link is affected";
  EXPECT_EQ(net.stats().cut, 2u);
  net.Restore(b.local().address(), a.local().address());
  SendText(a, b.local(), "x");
  EXPECT_EQ(Drain(b).size(), 1u);
}

TEST(FakeNetworkTest, UnreachableAndRelayDestinationsAreNotDelivered) {
  FakeClock clock;
  FakeNetwork net(&clock);
  FakeUdpBind a(&net, Ep("192.0.2.1:1000"));
  SendText(a, Ep("192.0.2.9:9"), "nobody");
  EXPECT_EQ(net.stats().unreachable, 1u);
  const OutgoingDatagram relay{nullptr, 0, TransportEndpoint::Relay(3)};
  EXPECT_EQ(a.Send(absl::Span<const OutgoingDatagram>(&relay, 1)), 1u)
      << "a UDP bind refuses relay endpoints";
}

TEST(FakeNetworkTest, InboxIsBoundedAndReceiveHandsOverBursts) {
  FakeClock clock;
  FakeNetwork net(&clock);
  FakeUdpBind a(&net, Ep("192.0.2.1:1000")), b(&net, Ep("192.0.2.2:2000"));
  for (size_t i = 0; i < FakeUdpBind::kInboxLimit + 5; ++i) SendText(a, b.local(), "p");
  EXPECT_EQ(b.receive_dropped(), 5u);
  absl::StatusOr<size_t> first = b.Receive([](absl::Span<uint8_t>, const TransportEndpoint&) {});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, FakeUdpBind::kBurst);
  EXPECT_TRUE(Readable(b)) << "still readable while datagrams wait beyond one burst";
  EXPECT_EQ(b.pending(), FakeUdpBind::kInboxLimit - FakeUdpBind::kBurst);
}

}  // namespace
}  // namespace tunnelmesh
