#include "node-agent/peer/peer_table.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"
#include "node-agent/peer/testing/fake_route_installer.h"

namespace tunnelmesh {
namespace {

struct Member {
  SecretKey secret = SecretKey::GeneratePrivate();
  PublicKey key = DerivePublicKey(secret);
};

coord::Peer MapPeer(const Member& m, const std::string& name, std::vector<std::string> allowed,
                    std::vector<std::string> endpoints = {}, bool is_static = false) {
  coord::Peer p;
  p.set_public_key(PublicKeyBytes(m.key));
  p.set_name(name);
  p.set_dns_name(name + ".mesh");
  for (const std::string& a : allowed) {
    p.add_allowed_ips(a);
    if (a.find("/32") != std::string::npos) p.add_mesh_ips(a.substr(0, a.find('/')));
  }
  for (const std::string& e : endpoints) p.add_endpoints(e);
  p.set_static_peer(is_static);
  return p;
}

Prefix P(const std::string& text) { return *Prefix::Parse(text); }

class PeerTableTest : public ::testing::Test {
 protected:
  PeerTableTest()
      : device_(self_.secret, 1420),
        table_(
            &device_, self_.key, &link_,
            [this](std::shared_ptr<const RouteTable> routes) {
              published_ = std::move(routes);
              ++publishes_;
            },
            &clock_) {
    table_.SetMeshCidrs({P("10.99.0.0/16")});
  }

  static void SetUpTestSuite() { InitCrypto(); }

  noise::Peer* Owner(const std::string& ip) const {
    noise::Peer* const* found = published_->Lookup(*IpAddress::Parse(ip));
    return found == nullptr ? nullptr : *found;
  }

  Member self_;
  FakeClock clock_;
  noise::Device device_;
  FakeRouteInstaller link_;
  std::shared_ptr<const RouteTable> published_;
  int publishes_ = 0;
  PeerTable table_;
};

TEST_F(PeerTableTest, FullMapCreatesDevicePeersAndRoutes) {
  Member a, b;
  coord::MapUpdate update;
  update.set_full(true);
  *update.add_upsert_peers() =
      MapPeer(a, "alpha", {"10.99.0.2/32", "192.168.5.0/24"}, {"192.0.2.1:51820"});
  *update.add_upsert_peers() = MapPeer(b, "beta", {"10.99.0.3/32"});
  PeerChanges changes = table_.Apply(update);
  EXPECT_EQ(changes.upserted.size(), 2u);
  EXPECT_TRUE(changes.removed.empty());
  ASSERT_NE(device_.FindPeer(a.key), nullptr);
  ASSERT_NE(device_.FindPeer(b.key), nullptr);
  // An agent peer starts at its first candidate; the path manager moves it later.
  EXPECT_EQ(device_.FindPeer(a.key)->endpoint(), Endpoint::Parse("192.0.2.1:51820").value());
  ASSERT_NE(published_, nullptr);
  EXPECT_EQ(Owner("10.99.0.2"), device_.FindPeer(a.key));
  EXPECT_EQ(Owner("192.168.5.9"), device_.FindPeer(a.key));
  EXPECT_EQ(Owner("10.99.0.3"), device_.FindPeer(b.key));
  EXPECT_EQ(Owner("10.99.0.4"), nullptr);
  // Only the prefix outside the mesh needs a route of its own.
  EXPECT_EQ(link_.routes, std::vector<Prefix>{P("192.168.5.0/24")});
  const PeerInfo* info = table_.Find(a.key);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->name, "alpha");
  EXPECT_EQ(info->dns_name, "alpha.mesh");
  EXPECT_EQ(info->mesh_ips, std::vector<std::string>{"10.99.0.2"});
  EXPECT_EQ(info->device_id, device_.FindPeer(a.key)->id());
  EXPECT_FALSE(info->is_static);
  EXPECT_EQ(table_.routes(), published_);
}

TEST_F(PeerTableTest, DeltasUpsertAndRemove) {
  Member a, b;
  coord::MapUpdate full;
  full.set_full(true);
  *full.add_upsert_peers() = MapPeer(a, "alpha", {"10.99.0.2/32"});
  table_.Apply(full);
  noise::Peer* alpha = device_.FindPeer(a.key);

  coord::MapUpdate add;
  *add.add_upsert_peers() = MapPeer(b, "beta", {"10.99.0.3/32"});
  *add.add_upsert_peers() = MapPeer(a, "alpha-renamed", {"10.99.0.2/32", "10.99.1.0/24"});
  table_.Apply(add);
  EXPECT_EQ(table_.peers().size(), 2u);
  EXPECT_EQ(device_.FindPeer(a.key), alpha) << "an update keeps the device peer";
  EXPECT_EQ(table_.Find(a.key)->name, "alpha-renamed");
  EXPECT_EQ(Owner("10.99.1.7"), alpha);

  coord::MapUpdate remove;
  remove.add_removed_peers(PublicKeyBytes(a.key));
  PeerChanges changes = table_.Apply(remove);
  EXPECT_EQ(changes.removed, std::vector<PublicKey>{a.key});
  EXPECT_EQ(table_.Find(a.key), nullptr);
  EXPECT_EQ(device_.FindPeer(a.key), nullptr);
  EXPECT_EQ(Owner("10.99.0.2"), nullptr);
  EXPECT_NE(Owner("10.99.0.3"), nullptr);

  // A full map drops everyone it does not list.
  Member c;
  coord::MapUpdate full2;
  full2.set_full(true);
  *full2.add_upsert_peers() = MapPeer(c, "gamma", {"10.99.0.4/32"});
  changes = table_.Apply(full2);
  EXPECT_EQ(changes.removed, std::vector<PublicKey>{b.key});
  EXPECT_EQ(table_.peers().size(), 1u);
  EXPECT_EQ(device_.FindPeer(b.key), nullptr);
}

TEST_F(PeerTableTest, OwnKeyAndBadEntriesAreSkipped) {
  Member a;
  coord::MapUpdate update;
  update.set_full(true);
  *update.add_upsert_peers() = MapPeer(self_, "me", {"10.99.0.1/32"});
  coord::Peer zero;
  zero.set_public_key("short");
  *update.add_upsert_peers() = zero;
  *update.add_upsert_peers() =
      MapPeer(a, "alpha", {"10.99.0.2/32", "not-a-prefix", "10.99.0.0/99"}, {"nonsense"});
  table_.Apply(update);
  EXPECT_EQ(table_.peers().size(), 1u);
  EXPECT_EQ(table_.Find(self_.key), nullptr);
  EXPECT_EQ(device_.FindPeer(self_.key), nullptr);
  EXPECT_EQ(table_.Find(a.key)->allowed, std::vector<Prefix>{P("10.99.0.2/32")});
  EXPECT_TRUE(table_.Find(a.key)->candidates.empty());
  EXPECT_EQ(table_.skipped_entries(), 4u);  // The short key, two prefixes, one endpoint.
}

TEST_F(PeerTableTest, KindChangeRecreatesTheDevicePeer) {
  Member a;
  coord::MapUpdate as_agent;
  *as_agent.add_upsert_peers() = MapPeer(a, "alpha", {"10.99.0.2/32"});
  table_.Apply(as_agent);
  const uint32_t agent_id = table_.Find(a.key)->device_id;

  coord::MapUpdate as_static;
  *as_static.add_upsert_peers() =
      MapPeer(a, "alpha", {"10.99.0.2/32"}, {"198.51.100.7:51820"}, /*is_static=*/true);
  PeerChanges changes = table_.Apply(as_static);
  EXPECT_EQ(changes.removed, std::vector<PublicKey>{a.key});
  EXPECT_EQ(changes.upserted, std::vector<PublicKey>{a.key});
  ASSERT_NE(table_.Find(a.key), nullptr);
  EXPECT_TRUE(table_.Find(a.key)->is_static);
  EXPECT_NE(table_.Find(a.key)->device_id, agent_id);
  EXPECT_EQ(device_.FindPeer(a.key)->id(), table_.Find(a.key)->device_id);
  EXPECT_EQ(Owner("10.99.0.2"), device_.FindPeer(a.key));
}

TEST_F(PeerTableTest, StaticPeersFromAConfigFile) {
  Member a;
  StaticPeerConfig config;
  config.public_key = a.key;
  config.endpoint = *Endpoint::Parse("198.51.100.7:51820");
  config.persistent_keepalive = std::chrono::seconds(25);
  config.allowed = {P("10.44.0.2/32"), P("0.0.0.0/0")};
  ASSERT_TRUE(table_.AddStatic(config).ok());
  StaticPeerConfig self_config;
  self_config.public_key = self_.key;
  EXPECT_EQ(table_.AddStatic(self_config).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(publishes_, 0) << "AddStatic waits for Publish";
  ASSERT_TRUE(table_.Publish().ok());
  EXPECT_EQ(Owner("10.44.0.2"), device_.FindPeer(a.key));
  EXPECT_EQ(Owner("8.8.8.8"), device_.FindPeer(a.key));
  EXPECT_EQ(device_.FindPeer(a.key)->persistent_keepalive(), std::chrono::seconds(25));
  EXPECT_TRUE(table_.Find(a.key)->is_static);
  // Outside the mesh range: both need routes.
  EXPECT_EQ(link_.routes.size(), 2u);
  link_.fail_with = absl::UnavailableError("netlink said no");
  EXPECT_EQ(table_.Publish().code(), absl::StatusCode::kUnavailable);
}

TEST_F(PeerTableTest, ApplyStaticAddsChangesMovesAndRemovesPeers) {
  Member a, b;
  StaticPeerConfig config;
  config.public_key = a.key;
  config.allowed = {P("10.44.0.2/32")};
  ASSERT_TRUE(table_.AddStatic(config).ok());
  ASSERT_TRUE(table_.Publish().ok());

  // `wg set tm0 peer B allowed-ips 10.55.0.0/24,10.44.0.2/32 endpoint ... persistent-keepalive 7`:
  // B is new, and 10.44.0.2/32 moves from A to B, as in WireGuard.
  std::vector<StaticPeerUpdate> updates(1);
  updates[0].public_key = b.key;
  updates[0].endpoint = *Endpoint::Parse("192.0.2.9:51820");
  updates[0].persistent_keepalive = std::chrono::seconds(7);
  updates[0].preshared_key = SecretKey::Random();
  updates[0].allowed = {P("10.55.0.0/24"), P("10.44.0.2/32")};
  ASSERT_TRUE(table_.ApplyStatic(updates, {}).ok());
  noise::Peer* peer_b = device_.FindPeer(b.key);
  ASSERT_NE(peer_b, nullptr);
  EXPECT_EQ(Owner("10.55.0.1"), peer_b);
  EXPECT_EQ(Owner("10.44.0.2"), peer_b);
  EXPECT_TRUE(table_.Find(a.key)->allowed.empty());
  EXPECT_EQ(peer_b->persistent_keepalive(), std::chrono::seconds(7));
  EXPECT_EQ(peer_b->endpoint()->udp(), *Endpoint::Parse("192.0.2.9:51820"));
  EXPECT_TRUE(*device_.PresharedKey(b.key) == *updates[0].preshared_key);
  EXPECT_EQ(link_.routes.size(), 2u);

  // Changing an existing peer: replace its allowed IPs, a new endpoint and keepalive.
  std::vector<StaticPeerUpdate> change(1);
  change[0].public_key = b.key;
  change[0].replace_allowed = true;
  change[0].allowed = {P("10.66.0.0/24")};
  change[0].endpoint = *Endpoint::Parse("192.0.2.10:51820");
  change[0].persistent_keepalive = std::chrono::seconds(0);
  ASSERT_TRUE(table_.ApplyStatic(change, {}).ok());
  EXPECT_EQ(device_.FindPeer(b.key), peer_b) << "an update keeps the device peer";
  EXPECT_EQ(Owner("10.55.0.1"), nullptr);
  EXPECT_EQ(Owner("10.66.0.1"), peer_b);
  EXPECT_EQ(peer_b->endpoint()->udp(), *Endpoint::Parse("192.0.2.10:51820"));
  EXPECT_EQ(peer_b->persistent_keepalive(), std::chrono::seconds(0));

  // Removal: routes and the device peer go.
  ASSERT_TRUE(table_.ApplyStatic({}, {b.key}).ok());
  EXPECT_EQ(table_.Find(b.key), nullptr);
  EXPECT_EQ(device_.FindPeer(b.key), nullptr);
  EXPECT_EQ(Owner("10.66.0.1"), nullptr);
  EXPECT_TRUE(link_.routes.empty());
}

TEST_F(PeerTableTest, ApplyStaticRefusesOwnKeyAndTheCoordinatorsPeers) {
  Member agent_peer, newcomer;
  coord::MapUpdate update;
  update.set_full(true);
  *update.add_upsert_peers() = MapPeer(agent_peer, "agent", {"10.99.0.2/32"});
  table_.Apply(update);
  std::vector<StaticPeerUpdate> updates(2);
  updates[0].public_key = newcomer.key;
  updates[1].public_key = agent_peer.key;
  EXPECT_EQ(table_.ApplyStatic(updates, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Find(newcomer.key), nullptr) << "a refused request changes nothing";
  EXPECT_EQ(table_.ApplyStatic({}, {agent_peer.key}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(table_.Find(agent_peer.key), nullptr);
  std::vector<StaticPeerUpdate> own(1);
  own[0].public_key = self_.key;
  EXPECT_EQ(table_.ApplyStatic(own, {}).code(), absl::StatusCode::kInvalidArgument);
}

// Runs one handshake from the table's device to `remote`'s device, which answers with `psk` (its
// only key for us). True when the table's side accepted the response.
bool HandshakeWith(noise::Device* ours, noise::Peer* peer, const Member& remote,
                   const PublicKey& self, const SecretKey& psk, FakeClock* clock) {
  noise::Device theirs(remote.secret, 1420);
  if (!theirs.AddPeer({self, psk.Clone(), std::nullopt, std::chrono::seconds(0)}).ok()) {
    return false;
  }
  std::vector<std::vector<uint8_t>> to_them, to_us;
  const TransportEndpoint us = *Endpoint::Parse("192.0.2.50:51820");
  clock->Advance(std::chrono::seconds(6));  // Past REKEY_TIMEOUT since any earlier attempt.
  const uint64_t before = peer->stats().handshakes_completed.load();
  ours->Initiate(peer, clock->Now(), clock->WallNow(),
                 [&](const TransportEndpoint&, absl::Span<const uint8_t> bytes) {
                   to_them.emplace_back(bytes.begin(), bytes.end());
                 });
  for (std::vector<uint8_t>& datagram : to_them) {
    theirs.Receive(absl::Span<uint8_t>(datagram), us, clock->Now(), clock->WallNow(),
                   [&](const TransportEndpoint&, absl::Span<const uint8_t> bytes) {
                     to_us.emplace_back(bytes.begin(), bytes.end());
                   });
  }
  for (std::vector<uint8_t>& datagram : to_us) {
    ours->Receive(absl::Span<uint8_t>(datagram), *peer->endpoint(), clock->Now(), clock->WallNow(),
                  [](const TransportEndpoint&, absl::Span<const uint8_t>) {});
  }
  return peer->stats().handshakes_completed.load() == before + 1;
}

TEST_F(PeerTableTest, ChangedPresharedKeysReachExistingAgentPeersButNeverStaticOnes) {
  const SecretKey old_psk = SecretKey::Random(), new_psk = SecretKey::Random();
  auto bytes = [](const SecretKey& k) {
    return std::string(reinterpret_cast<const char*>(k.data()), kKeySize);
  };
  table_.SetPresharedKeys(bytes(old_psk), "");
  Member agent, plain;
  coord::MapUpdate update;
  update.set_full(true);
  *update.add_upsert_peers() = MapPeer(agent, "alpha", {"10.99.0.2/32"}, {"192.0.2.1:51820"});
  *update.add_upsert_peers() =
      MapPeer(plain, "plain", {"10.99.0.3/32"}, {"192.0.2.2:51820"}, /*is_static=*/true);
  table_.Apply(update);
  noise::Peer* agent_peer = device_.FindPeer(agent.key);
  noise::Peer* static_peer = device_.FindPeer(plain.key);
  ASSERT_NE(agent_peer, nullptr);
  ASSERT_NE(static_peer, nullptr);
  EXPECT_TRUE(HandshakeWith(&device_, agent_peer, agent, self_.key, old_psk, &clock_));
  EXPECT_TRUE(HandshakeWith(&device_, static_peer, plain, self_.key, SecretKey(), &clock_))
      << "a static peer has no preshared key";

  // Step (b) of a rollover: use the new key, also accept the old one. The existing device peer
  // (no new map entry) takes both.
  table_.SetPresharedKeys(bytes(new_psk), bytes(old_psk));
  EXPECT_TRUE(HandshakeWith(&device_, agent_peer, agent, self_.key, new_psk, &clock_));
  EXPECT_TRUE(HandshakeWith(&device_, agent_peer, agent, self_.key, old_psk, &clock_));
  EXPECT_TRUE(HandshakeWith(&device_, static_peer, plain, self_.key, SecretKey(), &clock_));
  // Step (c): the new key only.
  table_.SetPresharedKeys(bytes(new_psk), "");
  EXPECT_FALSE(HandshakeWith(&device_, agent_peer, agent, self_.key, old_psk, &clock_));
  EXPECT_TRUE(HandshakeWith(&device_, agent_peer, agent, self_.key, new_psk, &clock_));
  EXPECT_EQ(device_.outcomes().Get(noise::Outcome::kSecondaryPresharedKey), 1u);
  // A peer added now gets the current key.
  Member late;
  coord::MapUpdate delta;
  *delta.add_upsert_peers() = MapPeer(late, "late", {"10.99.0.4/32"}, {"192.0.2.3:51820"});
  table_.Apply(delta);
  EXPECT_TRUE(
      HandshakeWith(&device_, device_.FindPeer(late.key), late, self_.key, new_psk, &clock_));
}

TEST_F(PeerTableTest, PodsAreNoDevicePeersButKeepTheirNames) {
  Member host, pod, other_pod;
  coord::MapUpdate update;
  update.set_full(true);
  // The host's allowed IPs carry its pod's address.
  *update.add_upsert_peers() = MapPeer(host, "node-a", {"10.99.0.2/32", "10.99.1.1/32"});
  coord::Peer p = MapPeer(pod, "runner.ci.pod", {"10.99.1.1/32"});
  p.set_kind(coord::MEMBER_KIND_POD);
  p.set_host_public_key(PublicKeyBytes(host.key));
  p.add_aliases("git");
  *update.add_upsert_peers() = p;
  coord::Peer q = MapPeer(other_pod, "db.ci.pod", {"10.99.1.2/32"});
  q.set_host_public_key(PublicKeyBytes(self_.key));  // One of this member's own pods.
  *update.add_upsert_peers() = q;
  PeerChanges changes = table_.Apply(update);
  EXPECT_EQ(changes.upserted, std::vector<PublicKey>{host.key});
  EXPECT_EQ(device_.FindPeer(pod.key), nullptr);
  EXPECT_EQ(device_.FindPeer(other_pod.key), nullptr);
  EXPECT_EQ(table_.peers().size(), 1u);
  ASSERT_EQ(table_.pod_peers().size(), 2u);
  const PodPeerInfo& info = table_.pod_peers().at(pod.key);
  EXPECT_EQ(info.name, "runner.ci.pod");
  EXPECT_EQ(info.dns_name, "runner.ci.pod.mesh");
  EXPECT_EQ(info.mesh_ips, std::vector<std::string>{"10.99.1.1"});
  EXPECT_EQ(info.aliases, std::vector<std::string>{"git"});
  EXPECT_EQ(info.host, host.key);
  // The pod's address routes to its host.
  EXPECT_EQ(Owner("10.99.1.1"), device_.FindPeer(host.key));

  // A delta removes one pod; a full map without the other drops it too.
  coord::MapUpdate removal;
  removal.add_removed_peers(PublicKeyBytes(pod.key));
  EXPECT_TRUE(table_.Apply(removal).removed.empty());
  EXPECT_EQ(table_.pod_peers().count(pod.key), 0u);
  EXPECT_EQ(table_.pod_peers().count(other_pod.key), 1u);
  coord::MapUpdate full;
  full.set_full(true);
  *full.add_upsert_peers() = MapPeer(host, "node-a", {"10.99.0.2/32"});
  table_.Apply(full);
  EXPECT_TRUE(table_.pod_peers().empty());
  EXPECT_NE(device_.FindPeer(host.key), nullptr);
}

TEST_F(PeerTableTest, MemberThatBecomesAPodLosesItsDevicePeer) {
  Member host, member;
  coord::MapUpdate first;
  *first.add_upsert_peers() = MapPeer(member, "m", {"10.99.1.1/32"});
  table_.Apply(first);
  ASSERT_NE(device_.FindPeer(member.key), nullptr);
  coord::MapUpdate second;
  coord::Peer p = MapPeer(member, "m.ci.pod", {"10.99.1.1/32"});
  p.set_host_public_key(PublicKeyBytes(host.key));
  *second.add_upsert_peers() = p;
  PeerChanges changes = table_.Apply(second);
  EXPECT_EQ(changes.removed, std::vector<PublicKey>{member.key});
  EXPECT_EQ(device_.FindPeer(member.key), nullptr);
  EXPECT_TRUE(table_.peers().empty());
  EXPECT_EQ(table_.pod_peers().count(member.key), 1u);
  EXPECT_EQ(Owner("10.99.1.1"), nullptr);
}

}  // namespace
}  // namespace tunnelmesh

namespace tunnelmesh {
namespace {

TEST_F(PeerTableTest, ExitPeerOwnsTheInternetButNotTheMesh) {
  Member a, b;
  coord::MapUpdate full;
  full.set_full(true);
  *full.add_upsert_peers() = MapPeer(a, "alpha", {"10.99.0.2/32"});
  *full.add_upsert_peers() = MapPeer(b, "beta", {"10.99.0.3/32", "192.168.5.0/24"});
  table_.Apply(full);
  EXPECT_EQ(Owner("93.184.216.34"), nullptr);
  const int routes_before = link_.calls;
  EXPECT_TRUE(table_.SetExitPeer(a.key));
  EXPECT_EQ(Owner("93.184.216.34"), device_.FindPeer(a.key));
  EXPECT_EQ(Owner("2001:db8::1"), device_.FindPeer(a.key));
  // Longest prefix: mesh members and other peers' prefixes keep their owners.
  EXPECT_EQ(Owner("10.99.0.3"), device_.FindPeer(b.key));
  EXPECT_EQ(Owner("192.168.5.9"), device_.FindPeer(b.key));
  // The link never gets a default route from the exit.
  EXPECT_EQ(link_.calls, routes_before + 1);
  EXPECT_TRUE(std::none_of(link_.routes.begin(), link_.routes.end(),
                           [](const Prefix& p) { return p.length() == 0; }));
  // Moves with the exit, goes with it.
  EXPECT_TRUE(table_.SetExitPeer(b.key));
  EXPECT_EQ(Owner("93.184.216.34"), device_.FindPeer(b.key));
  EXPECT_TRUE(table_.SetExitPeer(std::nullopt));
  EXPECT_EQ(Owner("93.184.216.34"), nullptr);
  Member stranger;
  EXPECT_FALSE(table_.SetExitPeer(stranger.key));
  // A peer that leaves the map stops being the exit.
  EXPECT_TRUE(table_.SetExitPeer(a.key));
  coord::MapUpdate gone;
  gone.add_removed_peers(PublicKeyBytes(a.key));
  table_.Apply(gone);
  EXPECT_FALSE(table_.exit_peer().has_value());
  EXPECT_EQ(Owner("93.184.216.34"), nullptr);
}

}  // namespace
}  // namespace tunnelmesh
