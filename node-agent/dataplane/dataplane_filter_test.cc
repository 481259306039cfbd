// The packet filter in the data plane: two data planes over loopback UDP with fake TUN devices,
// one of them filtering. Inbound packets its rules deny never reach its TUN (counted by the
// filter), a new rule set cuts a flow at its next packet, and egress destinations are checked
// before sealing on the sender.
#include <thread>

#include "gtest/gtest.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/transport/udp_bind.h"
#include "node-agent/tun/testing/fake_tun_device.h"

namespace tunnelmesh {
namespace {

constexpr uint8_t kSyn = 0x02, kAck = 0x10;

// IPv4 with a 20-byte TCP or UDP header (checksums are not checked on this path).
std::vector<uint8_t> Packet(const char* src, const char* dst, uint8_t protocol,
                            uint16_t source_port, uint16_t destination_port, uint8_t tcp_flags) {
  const size_t length = 20 + (protocol == 6 ? 20 : 8) + 16;
  std::vector<uint8_t> p(length, 0);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(length >> 8);
  p[3] = static_cast<uint8_t>(length);
  p[8] = 64;
  p[9] = protocol;
  IpAddress s = *IpAddress::Parse(src), d = *IpAddress::Parse(dst);
  std::copy(s.bytes(), s.bytes() + 4, p.begin() + 12);
  std::copy(d.bytes(), d.bytes() + 4, p.begin() + 16);
  p[20] = static_cast<uint8_t>(source_port >> 8);
  p[21] = static_cast<uint8_t>(source_port);
  p[22] = static_cast<uint8_t>(destination_port >> 8);
  p[23] = static_cast<uint8_t>(destination_port);
  if (protocol == 6) {
    p[32] = 0x50;  // Data offset: 5 words.
    p[33] = tcp_flags;
  } else {
    p[24] = 0;
    p[25] = static_cast<uint8_t>(length - 20);
  }
  return p;
}

std::vector<uint8_t> Tcp(const char* src, const char* dst, uint16_t sport, uint16_t dport,
                         uint8_t flags) {
  return Packet(src, dst, 6, sport, dport, flags);
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

Prefix P(const char* text) { return *Prefix::Parse(text); }

struct Node {
  explicit Node(const SecretKey& key) : device(key, 1420) { socket = *UdpBind::Open(0, false); }
  noise::Device device;
  FakeTunDevice tun;
  std::unique_ptr<UdpBind> socket;
  filter::Filter filter;
  std::unique_ptr<Dataplane> plane;
};

// a = 10.0.0.1, b = 10.0.0.2, connected; both planes carry a filter (off until rules are set).
class DataplaneFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    a_ = std::make_unique<Node>(SecretKey::GeneratePrivate());
    b_ = std::make_unique<Node>(SecretKey::GeneratePrivate());
    Endpoint a_ep(*IpAddress::Parse("127.0.0.1"), a_->socket->port());
    Endpoint b_ep(*IpAddress::Parse("127.0.0.1"), b_->socket->port());
    noise::Peer* a_peer = *a_->device.AddPeer(
        {b_->device.identity().public_key, SecretKey(), b_ep, std::chrono::seconds(0)});
    noise::Peer* b_peer = *b_->device.AddPeer(
        {a_->device.identity().public_key, SecretKey(), a_ep, std::chrono::seconds(0)});
    auto a_routes = std::make_shared<RouteTable>();
    a_routes->Insert(P("10.0.0.2/32"), a_peer);
    auto b_routes = std::make_shared<RouteTable>();
    b_routes->Insert(P("10.0.0.1/32"), b_peer);
    for (auto [node, routes] : {std::pair{a_.get(), a_routes}, std::pair{b_.get(), b_routes}}) {
      node->plane = std::make_unique<Dataplane>(&node->device, &node->tun, node->socket.get(),
                                                nullptr, 1420, &clock_);
      node->plane->SetRoutes(routes);
      node->plane->SetFilter(&node->filter);
      ASSERT_TRUE(node->plane->Start().ok());
    }
  }
  void TearDown() override {
    a_->plane->Stop();
    b_->plane->Stop();
  }

  SystemClock clock_;
  std::unique_ptr<Node> a_, b_;
};

TEST_F(DataplaneFilterTest, InboundRulesDecideWhatReachesTheTun) {
  // Before any rule set: the filter is off and everything passes. (write_count() counts every
  // write, popped or not.)
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40000, 8080, kSyn));
  ASSERT_TRUE(WaitFor([&] { return b_->tun.write_count() == 1; }));
  b_->tun.PopWrittenPacket();

  filter::RuleSet rules;
  rules.policies = {"a-to-b-ssh"};
  filter::Rule ssh;
  ssh.sources = {P("10.0.0.1/32")};
  ssh.destinations = {P("10.0.0.2/32")};
  ssh.protocol = filter::Protocol::kTcp;
  ssh.ports = {{22, 22}};
  rules.rules = {ssh};
  b_->filter.SetRules(std::make_shared<const filter::Matcher>(rules));

  const auto syn = Tcp("10.0.0.1", "10.0.0.2", 40001, 22, kSyn);
  a_->tun.InjectPacket(syn);
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40002, 8080, kSyn));
  ASSERT_TRUE(WaitFor([&] {
    return b_->filter.drops().Get(filter::Drop::kDefaultDenied) == 1 && b_->tun.write_count() == 2;
  })) << "default_denied="
      << b_->filter.drops().Get(filter::Drop::kDefaultDenied)
      << " malformed=" << b_->filter.drops().Get(filter::Drop::kMalformed)
      << " written=" << b_->tun.write_count();
  EXPECT_EQ(*b_->tun.PopWrittenPacket(), syn);
  // b's reply leaves (b is not an egress check) and reaches a, which filters nothing.
  b_->tun.InjectPacket(Tcp("10.0.0.2", "10.0.0.1", 22, 40001, kSyn | kAck));
  ASSERT_TRUE(WaitFor([&] { return a_->tun.write_count() == 1; }));
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40001, 22, kAck));
  ASSERT_TRUE(WaitFor([&] { return b_->tun.write_count() == 3; }));
  b_->tun.PopWrittenPacket();
  EXPECT_EQ(b_->filter.tracked_flows(), 1u);

  // The policy goes: the established flow stops at its next packet.
  filter::RuleSet none;
  b_->filter.SetRules(std::make_shared<const filter::Matcher>(none));
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40001, 22, kAck));
  ASSERT_TRUE(WaitFor([&] { return b_->filter.drops().Get(filter::Drop::kDefaultDenied) == 2; }));
  EXPECT_EQ(b_->tun.write_count(), 3u);

  // Filter off again: it passes.
  b_->filter.SetRules(nullptr);
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40001, 22, kAck));
  ASSERT_TRUE(WaitFor([&] { return b_->tun.write_count() == 4; }));
  EXPECT_EQ(b_->filter.drops().Get(filter::Drop::kDefaultDenied), 2u);
}

TEST_F(DataplaneFilterTest, EgressDestinationsAreCheckedBeforeSealing) {
  // b stands for a member that cannot filter: a checks what it sends there.
  filter::RuleSet rules;
  rules.policies = {"dns-only"};
  rules.egress = {P("10.0.0.2/32")};
  filter::Rule dns;
  dns.sources = {P("10.0.0.1/32")};
  dns.destinations = {P("10.0.0.2/32")};
  dns.protocol = filter::Protocol::kUdp;
  dns.ports = {{53, 53}};
  rules.rules = {dns};
  a_->filter.SetRules(std::make_shared<const filter::Matcher>(rules));

  const auto query = Packet("10.0.0.1", "10.0.0.2", 17, 5353, 53, 0);
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.0.2", 40000, 80, kSyn));
  a_->tun.InjectPacket(query);
  ASSERT_TRUE(WaitFor([&] { return b_->tun.write_count() == 1; }));
  EXPECT_EQ(*b_->tun.PopWrittenPacket(), query);
  EXPECT_EQ(a_->filter.drops().Get(filter::Drop::kDefaultDenied), 1u);
  EXPECT_EQ(a_->plane->drop_counts().Get(DataplaneDrop::kNoRoute), 0u);
  // The answer comes back through a's filter as a reply of the tracked query.
  b_->tun.InjectPacket(Packet("10.0.0.2", "10.0.0.1", 17, 53, 5353, 0));
  ASSERT_TRUE(WaitFor([&] { return a_->tun.write_count() == 1; }));
  std::vector<filter::PolicyCount> counts = a_->filter.policy_counts();
  ASSERT_FALSE(counts.empty());
  EXPECT_EQ(counts[0].policy, "dns-only");
  EXPECT_GE(counts[0].allowed, 1u);
}

TEST_F(DataplaneFilterTest, HostedPodAddressesFlowBothWaysUnderTheHostsFilter) {
  // b hosts a pod, 10.0.1.9 (tunnelmesh-cni): the coordinator lists the pod's address in b's
  // allowed IPs, and b's filter decides for it. Nothing checks that a packet is for b's own
  // address: b writes it to its TUN, and the kernel forwards it to the pod's veth.
  noise::Peer* a_to_b = a_->device.FindPeer(b_->device.identity().public_key);
  ASSERT_NE(a_to_b, nullptr);
  auto a_routes = std::make_shared<RouteTable>();
  a_routes->Insert(P("10.0.0.2/32"), a_to_b);
  a_routes->Insert(P("10.0.1.9/32"), a_to_b);
  a_->plane->SetRoutes(a_routes);
  filter::RuleSet rules;
  rules.policies = {"a-to-pod-web"};
  filter::Rule web;
  web.sources = {P("10.0.0.1/32")};
  web.destinations = {P("10.0.1.9/32")};
  web.protocol = filter::Protocol::kTcp;
  web.ports = {{80, 80}};
  rules.rules = {web};
  b_->filter.SetRules(std::make_shared<const filter::Matcher>(rules));

  const auto syn = Tcp("10.0.0.1", "10.0.1.9", 40000, 80, kSyn);
  a_->tun.InjectPacket(Tcp("10.0.0.1", "10.0.1.9", 40001, 22, kSyn));  // No policy allows it.
  a_->tun.InjectPacket(syn);
  ASSERT_TRUE(WaitFor([&] {
    return b_->tun.write_count() == 1 && b_->filter.drops().Get(filter::Drop::kDefaultDenied) == 1;
  }));
  EXPECT_EQ(*b_->tun.PopWrittenPacket(), syn);

  // The pod's reply leaves b from the pod's address (no source check on send) and passes a's
  // inner-source check, since the pod's address is b's.
  const auto reply = Tcp("10.0.1.9", "10.0.0.1", 80, 40000, kSyn | kAck);
  b_->tun.InjectPacket(reply);
  ASSERT_TRUE(WaitFor([&] { return a_->tun.write_count() == 1; }));
  EXPECT_EQ(*a_->tun.PopWrittenPacket(), reply);

  // An address b does not host is refused by a: b may send only from its own and its pods'.
  b_->tun.InjectPacket(Tcp("10.0.1.77", "10.0.0.1", 80, 40000, kSyn | kAck));
  ASSERT_TRUE(WaitFor([&] { return a_->device.drops().Get(noise::Drop::kSourceNotAllowed) == 1; }));
  EXPECT_EQ(a_->tun.write_count(), 1u);
  EXPECT_EQ(b_->plane->drop_counts().Get(DataplaneDrop::kNoRoute), 0u);
}

}  // namespace
}  // namespace tunnelmesh
