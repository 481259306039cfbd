// Two data planes over real loopback UDP sockets (UdpBind) with fake TUN devices: packets injected
// into one TUN come out of the other, and spoofed inner sources are dropped and counted; and two
// that reach each other only through RelayBinds wired back to back.
#include "node-agent/dataplane/dataplane.h"

#include <thread>

#include "gtest/gtest.h"
#include "node-agent/transport/relay_bind.h"
#include "node-agent/transport/udp_bind.h"
#include "node-agent/tun/testing/fake_tun_device.h"

namespace tunnelmesh {
namespace {

std::vector<uint8_t> Ipv4Packet(const char* src, const char* dst, size_t length) {
  std::vector<uint8_t> p(length, 0xab);
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
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

struct Node {
  explicit Node(const SecretKey& key) : device(key, 1420) { socket = *UdpBind::Open(0, false); }
  noise::Device device;
  FakeTunDevice tun;
  std::unique_ptr<UdpBind> socket;
  std::unique_ptr<RelayBind> relay;
  std::unique_ptr<Dataplane> plane;
  noise::Peer* peer = nullptr;
};

TEST(DataplaneTest, CarriesPacketsBothWaysAndChecksInnerSource) {
  InitCrypto();
  SystemClock clock;
  SecretKey ka = SecretKey::GeneratePrivate(), kb = SecretKey::GeneratePrivate();
  Node a(ka), b(kb);
  Endpoint a_ep(*IpAddress::Parse("127.0.0.1"), a.socket->port());
  Endpoint b_ep(*IpAddress::Parse("::1"), b.socket->port());
  a.peer = *a.device.AddPeer(
      {b.device.identity().public_key, SecretKey(), b_ep, std::chrono::seconds(0)});
  b.peer = *b.device.AddPeer(
      {a.device.identity().public_key, SecretKey(), a_ep, std::chrono::seconds(0)});
  auto a_routes = std::make_shared<RouteTable>();
  a_routes->Insert(*Prefix::Parse("10.0.0.2/32"), a.peer);
  auto b_routes = std::make_shared<RouteTable>();
  b_routes->Insert(*Prefix::Parse("10.0.0.1/32"), b.peer);
  a.plane = std::make_unique<Dataplane>(&a.device, &a.tun, a.socket.get(), nullptr, 1420, &clock);
  b.plane = std::make_unique<Dataplane>(&b.device, &b.tun, b.socket.get(), nullptr, 1420, &clock);
  a.plane->SetRoutes(a_routes);
  b.plane->SetRoutes(b_routes);
  ASSERT_TRUE(a.plane->Start().ok());
  ASSERT_TRUE(b.plane->Start().ok());

  auto ping = Ipv4Packet("10.0.0.1", "10.0.0.2", 84);
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return b.tun.write_count() == 1; }));
  EXPECT_EQ(*b.tun.PopWrittenPacket(), ping);

  for (int i = 0; i < 200; ++i) b.tun.InjectPacket(Ipv4Packet("10.0.0.2", "10.0.0.1", 1400));
  ASSERT_TRUE(WaitFor([&] { return a.tun.write_count() == 200; }));

  // A packet whose destination no peer owns is dropped as no_route.
  a.tun.InjectPacket(Ipv4Packet("10.0.0.1", "10.9.9.9", 60));
  ASSERT_TRUE(WaitFor([&] { return a.plane->drops().Get(DataplaneDrop::kNoRoute) == 1; }));

  // B sends a packet claiming a source it does not own: A must refuse it.
  auto spoofed_routes = std::make_shared<RouteTable>(*b_routes);
  spoofed_routes->Insert(*Prefix::Parse("10.0.0.0/24"), b.peer);
  b.plane->SetRoutes(spoofed_routes);
  b.tun.InjectPacket(Ipv4Packet("10.0.0.77", "10.0.0.1", 60));
  ASSERT_TRUE(WaitFor([&] { return a.device.drops().Get(noise::Drop::kSourceNotAllowed) == 1; }));
  EXPECT_EQ(a.tun.write_count(), 200u);

  // A relay endpoint without a relay Bind is a send failure, counted by the data plane.
  a.peer->set_endpoint(TransportEndpoint::Relay(b.peer->id()));
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return a.plane->drops().Get(DataplaneDrop::kSendFailed) == 1; }));
  EXPECT_EQ(a.plane->drop_counts().Get(DataplaneDrop::kSendFailed), 1u);

  a.plane->Stop();
  b.plane->Stop();
  EXPECT_TRUE(a.plane->failure().ok());
}

TEST(DataplaneTest, RelayEndpointsGoThroughTheRelayBind) {
  InitCrypto();
  SystemClock clock;
  SecretKey ka = SecretKey::GeneratePrivate(), kb = SecretKey::GeneratePrivate();
  Node a(ka), b(kb);
  // Each side reaches the other only through the "relay": each RelayBind's frames are delivered to
  // the other's, as the relay server would, from the sender's key.
  std::atomic<int> relayed{0};
  const PublicKey a_key = a.device.identity().public_key, b_key = b.device.identity().public_key;
  a.relay = std::make_unique<RelayBind>([&](const PublicKey& to, absl::Span<const uint8_t> bytes) {
    EXPECT_EQ(to, b_key);
    ++relayed;
    b.relay->Deliver(a_key, bytes);
    return true;
  });
  b.relay = std::make_unique<RelayBind>([&](const PublicKey& to, absl::Span<const uint8_t> bytes) {
    EXPECT_EQ(to, a_key);
    ++relayed;
    a.relay->Deliver(b_key, bytes);
    return true;
  });
  a.peer = *a.device.AddPeer({b_key, SecretKey(), std::nullopt, std::chrono::seconds(0),
                              /*roaming=*/false});
  b.peer = *b.device.AddPeer({a_key, SecretKey(), std::nullopt, std::chrono::seconds(0),
                              /*roaming=*/false});
  a.relay->SetPeer(a.peer->id(), b_key);
  b.relay->SetPeer(b.peer->id(), a_key);
  a.peer->set_endpoint(TransportEndpoint::Relay(a.peer->id()));
  b.peer->set_endpoint(TransportEndpoint::Relay(b.peer->id()));
  a.plane =
      std::make_unique<Dataplane>(&a.device, &a.tun, a.socket.get(), a.relay.get(), 1420, &clock);
  b.plane =
      std::make_unique<Dataplane>(&b.device, &b.tun, b.socket.get(), b.relay.get(), 1420, &clock);
  auto a_routes = std::make_shared<RouteTable>();
  a_routes->Insert(*Prefix::Parse("10.0.0.2/32"), a.peer);
  auto b_routes = std::make_shared<RouteTable>();
  b_routes->Insert(*Prefix::Parse("10.0.0.1/32"), b.peer);
  a.plane->SetRoutes(a_routes);
  b.plane->SetRoutes(b_routes);
  ASSERT_TRUE(a.plane->Start().ok());
  ASSERT_TRUE(b.plane->Start().ok());
  auto ping = Ipv4Packet("10.0.0.1", "10.0.0.2", 84);
  a.tun.InjectPacket(ping);
  ASSERT_TRUE(WaitFor([&] { return b.tun.write_count() == 1; }));
  EXPECT_EQ(*b.tun.PopWrittenPacket(), ping);
  EXPECT_GE(relayed.load(), 3) << "initiation, response and data all went through the relay";
  for (int i = 0; i < 100; ++i) b.tun.InjectPacket(Ipv4Packet("10.0.0.2", "10.0.0.1", 1400));
  ASSERT_TRUE(WaitFor([&] { return a.tun.write_count() == 100; }));
  EXPECT_EQ(a.peer->endpoint(), TransportEndpoint::Relay(a.peer->id())) << "no roaming";
  EXPECT_EQ(a.plane->drop_counts().Get(DataplaneDrop::kRelayQueueFull), 0u);
  a.plane->Stop();
  b.plane->Stop();
}

}  // namespace
}  // namespace tunnelmesh
