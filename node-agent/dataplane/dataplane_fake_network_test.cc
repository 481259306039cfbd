// Two data planes on the in-memory network (FakeUdpBind over FakeNetwork) with fake TUN devices:
// the handshake and the traffic run through the real Dataplane threads without a socket; a cut
// link loses packets, and traffic resumes on the same session once it is restored.
#include <chrono>
#include <memory>
#include <thread>

#include "gtest/gtest.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/transport/testing/fake_network.h"
#include "node-agent/tun/testing/fake_tun_device.h"

namespace tunnelmesh {
namespace {

std::vector<uint8_t> Packet(const char* src, const char* dst, size_t length, uint8_t fill) {
  std::vector<uint8_t> p(length, fill);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(length >> 8);
  p[3] = static_cast<uint8_t>(length);
  IpAddress s = *IpAddress::Parse(src), d = *IpAddress::Parse(dst);
  std::copy(s.bytes(), s.bytes() + 4, p.begin() + 12);
  std::copy(d.bytes(), d.bytes() + 4, p.begin() + 16);
  return p;
}

template <typename Pred>
bool WaitFor(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

struct Host {
  Host(FakeNetwork* network, const char* endpoint)
      : key(SecretKey::GeneratePrivate()),
        device(key, 1420),
        bind(network, *Endpoint::Parse(endpoint)) {}
  SecretKey key;
  noise::Device device;
  FakeTunDevice tun;
  FakeUdpBind bind;
  noise::Peer* peer = nullptr;
  std::unique_ptr<Dataplane> plane;
};

TEST(DataplaneFakeNetworkTest, HandshakeAndTrafficOverTheFakeNetwork) {
  InitCrypto();
  // The data-plane threads read the clock concurrently, which FakeClock does not allow; latency
  // zero means the network itself never needs the time.
  SystemClock clock;
  FakeNetwork network(&clock);
  Host a(&network, "192.0.2.1:51820"), b(&network, "192.0.2.2:51820");
  a.peer = *a.device.AddPeer(
      {b.device.identity().public_key, SecretKey(), b.bind.local(), std::chrono::seconds(0)});
  b.peer = *b.device.AddPeer(
      {a.device.identity().public_key, SecretKey(), std::nullopt, std::chrono::seconds(0)});
  auto a_routes = std::make_shared<RouteTable>();
  a_routes->Insert(*Prefix::Parse("10.0.0.2/32"), a.peer);
  auto b_routes = std::make_shared<RouteTable>();
  b_routes->Insert(*Prefix::Parse("10.0.0.1/32"), b.peer);
  a.plane = std::make_unique<Dataplane>(&a.device, &a.tun, &a.bind, nullptr, 1420, &clock);
  b.plane = std::make_unique<Dataplane>(&b.device, &b.tun, &b.bind, nullptr, 1420, &clock);
  a.plane->SetRoutes(a_routes);
  b.plane->SetRoutes(b_routes);
  ASSERT_TRUE(a.plane->Start().ok());
  ASSERT_TRUE(b.plane->Start().ok());

  const auto ping = Packet("10.0.0.1", "10.0.0.2", 84, 1);
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return b.tun.write_count() == 1; }));
  EXPECT_EQ(*b.tun.PopWrittenPacket(), ping);
  EXPECT_EQ(a.peer->stats().handshakes_completed.load(), 1u);
  EXPECT_EQ(b.peer->endpoint(), TransportEndpoint(a.bind.local())) << "learned from the handshake";

  for (int i = 0; i < 300; ++i) b.tun.InjectPacket(Packet("10.0.0.2", "10.0.0.1", 1400, 2));
  ASSERT_TRUE(WaitFor([&] { return a.tun.write_count() == 300; }));

  // Cut: packets are lost in the network, not refused by the data plane.
  const size_t delivered_before_cut = b.tun.write_count();
  network.Cut(a.bind.local().address(), b.bind.local().address());
  const uint64_t cut_before = network.stats().cut;
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return network.stats().cut > cut_before; }));
  EXPECT_EQ(a.plane->drops().Get(DataplaneDrop::kSendFailed), 0u);
  // Traffic resumes once the link is back. (write_count counts every write since the start; a
  // slow outbound thread may still hold the first ping, so wait for any new delivery, not for a
  // total.)
  network.Restore(a.bind.local().address(), b.bind.local().address());
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return b.tun.write_count() > delivered_before_cut; }));
  EXPECT_EQ(*b.tun.PopWrittenPacket(), ping);
  EXPECT_EQ(a.peer->stats().handshakes_completed.load(), 1u) << "same session after the cut";
  EXPECT_EQ(a.device.drops().Get(noise::Drop::kMalformed), 0u);

  a.plane->Stop();
  b.plane->Stop();
  EXPECT_TRUE(a.plane->failure().ok());
  EXPECT_TRUE(b.plane->failure().ok());
}

}  // namespace
}  // namespace tunnelmesh
