#include "node-agent/transport/ssh_transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libssh/libssh.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace tunnelmesh {
namespace {

using namespace std::chrono_literals;

SecretKey NodeKey(uint8_t fill) {
  uint8_t bytes[kKeySize];
  for (size_t i = 0; i < kKeySize; ++i) bytes[i] = static_cast<uint8_t>(fill + i);
  return SecretKey(bytes);
}

template <typename F>
bool WaitFor(F condition, std::chrono::milliseconds limit = 8000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

TEST(SshKey, DerivationIsDeterministicAndPerNode) {
  const SshIdentity a1 = DeriveSshIdentity(NodeKey(1));
  const SshIdentity a2 = DeriveSshIdentity(NodeKey(1));
  const SshIdentity b = DeriveSshIdentity(NodeKey(2));
  EXPECT_EQ(a1.public_key, a2.public_key);
  EXPECT_TRUE(a1.seed == a2.seed);
  EXPECT_FALSE(a1.public_key == b.public_key);
  // Neither half is the node key itself.
  EXPECT_FALSE(a1.seed == NodeKey(1));
  EXPECT_FALSE(a1.public_key == DerivePublicKey(NodeKey(1)));
}

TEST(SshKey, LibsshKeysMatchTheRawOnes) {
  const SshIdentity id = DeriveSshIdentity(NodeKey(7));
  absl::StatusOr<SshKeyPtr> priv = ImportSshPrivateKey(id);
  ASSERT_TRUE(priv.ok()) << priv.status();
  absl::StatusOr<SshKeyPtr> pub = ImportSshPublicKey(id.public_key);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(ssh_key_cmp(priv->get(), pub->get(), SSH_KEY_CMP_PUBLIC), 0);
  PublicKey raw;
  ASSERT_TRUE(ExportEd25519(priv->get(), &raw));
  EXPECT_EQ(raw, id.public_key);
  // A signature made with the imported private key verifies with the published public key: the
  // seed and the public key really are one Ed25519 pair.
  ASSERT_TRUE(ExportEd25519(pub->get(), &raw));
  EXPECT_EQ(raw, id.public_key);
}

struct Node {
  SecretKey key;
  PublicKey node_public;
  absl::Mutex mu;
  std::vector<std::vector<uint8_t>> received ABSL_GUARDED_BY(mu);
  std::vector<PublicKey> from ABSL_GUARDED_BY(mu);
  std::unique_ptr<SshTransport> ssh;

  explicit Node(uint8_t fill) : key(NodeKey(fill)), node_public(DerivePublicKey(key)) {
    SshTransport::Options options;
    options.port = 0;
    options.redial_backoff = 50ms;
    ssh = std::make_unique<SshTransport>(
        key, options,
        [this](const PublicKey& peer, const Endpoint& remote, absl::Span<const uint8_t> f) {
          EXPECT_TRUE(remote.valid());
          absl::MutexLock lock(&mu);
          received.emplace_back(f.begin(), f.end());
          from.push_back(peer);
        });
  }
  size_t count() {
    absl::MutexLock lock(&mu);
    return received.size();
  }
  SshPeer AsPeer(const std::string& name) const {
    SshPeer p;
    p.name = name;
    p.host_key = ssh->public_key();
    p.port = ssh->port();
    p.hosts = {*IpAddress::Parse("127.0.0.1")};
    return p;
  }
};

TEST(SshTransport, CarriesFramesBothWaysAfterCheckingKeys) {
  Node a(1), b(2);
  ASSERT_TRUE(a.ssh->Start().ok());
  ASSERT_TRUE(b.ssh->Start().ok());
  a.ssh->SetPeers({{b.node_public, b.AsPeer("b")}});
  b.ssh->SetPeers({{a.node_public, a.AsPeer("a")}});
  EXPECT_FALSE(a.ssh->Send(b.node_public, std::vector<uint8_t>{1}));
  a.ssh->Connect(b.node_public);
  ASSERT_TRUE(WaitFor([&] { return a.ssh->Connected(b.node_public); }));
  ASSERT_TRUE(WaitFor([&] { return b.ssh->Connected(a.node_public); }));

  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(a.ssh->Send(b.node_public, std::vector<uint8_t>(1 + i * 10, uint8_t(i))));
  }
  ASSERT_TRUE(b.ssh->Send(a.node_public, std::vector<uint8_t>{9, 9}));
  ASSERT_TRUE(WaitFor([&] { return b.count() == 100 && a.count() == 1; }));
  {
    absl::MutexLock lock(&b.mu);
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(b.received[i], std::vector<uint8_t>(1 + i * 10, uint8_t(i)));
      EXPECT_EQ(b.from[i], a.node_public);  // The server knows the peer by its login key.
    }
  }
  EXPECT_EQ(a.ssh->counters().host_key_mismatches, 0u);
  EXPECT_EQ(b.ssh->counters().unknown_clients, 0u);

  // A peer that leaves the map loses its connection.
  b.ssh->SetPeers({});
  EXPECT_TRUE(WaitFor([&] { return !a.ssh->Connected(b.node_public); }));
}

TEST(SshTransport, RefusesAServerWithAnotherHostKey) {
  Node a(1), b(2), impostor(3);
  ASSERT_TRUE(a.ssh->Start().ok());
  ASSERT_TRUE(b.ssh->Start().ok());
  // The map says b's key, but the server at that address is the impostor (which would accept a).
  SshPeer published = b.AsPeer("b");
  ASSERT_TRUE(impostor.ssh->Start().ok());
  published.port = impostor.ssh->port();
  impostor.ssh->SetPeers({{a.node_public, a.AsPeer("a")}});
  a.ssh->SetPeers({{b.node_public, published}});
  a.ssh->Connect(b.node_public);
  ASSERT_TRUE(WaitFor([&] { return a.ssh->counters().host_key_mismatches == 1; }));
  ASSERT_TRUE(WaitFor([&] { return a.ssh->counters().dial_failures == 1; }));
  EXPECT_FALSE(a.ssh->Connected(b.node_public));
  EXPECT_FALSE(impostor.ssh->Connected(a.node_public));
  EXPECT_EQ(a.ssh->counters().connects, 0u);
}

TEST(SshTransport, RefusesALoginWithAKeyOfNoPeer) {
  Node a(1), b(2);
  ASSERT_TRUE(a.ssh->Start().ok());
  ASSERT_TRUE(b.ssh->Start().ok());
  a.ssh->SetPeers({{b.node_public, b.AsPeer("b")}});
  b.ssh->SetPeers({});  // b does not know a.
  a.ssh->Connect(b.node_public);
  ASSERT_TRUE(WaitFor([&] { return a.ssh->counters().dial_failures == 1; }));
  EXPECT_GE(b.ssh->counters().unknown_clients, 1u);
  EXPECT_FALSE(a.ssh->Connected(b.node_public));
  EXPECT_EQ(b.ssh->counters().connects, 0u);
  EXPECT_EQ(a.ssh->counters().host_key_mismatches, 0u);

  // Once b's map lists a, the next dial (after the backoff) succeeds.
  b.ssh->SetPeers({{a.node_public, a.AsPeer("a")}});
  ASSERT_TRUE(WaitFor([&] {
    a.ssh->Connect(b.node_public);
    return a.ssh->Connected(b.node_public);
  }));
}

// Opens `count` TCP connections to 127.0.0.1:port that never speak, from `from` (host order;
// 0: any loopback address the kernel picks), into *fds.
void OpenSilentConnections(uint16_t port, int count, uint32_t from, std::vector<int>* fds) {
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    fds->push_back(fd);
    if (from != 0) {
      sockaddr_in source{};
      source.sin_family = AF_INET;
      source.sin_addr.s_addr = htonl(from);
      ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source)), 0);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  }
}

TEST(SshTransport, AFloodOfSilentConnectionsDoesNotStopDials) {
  Node a(1), b(2);
  SshTransport::Options options;
  options.port = 0;
  options.max_pending_logins = 4;
  options.handshake_timeout = std::chrono::milliseconds(2000);
  SshTransport flooded(NodeKey(2), options, nullptr);
  ASSERT_TRUE(flooded.Start().ok());
  ASSERT_TRUE(a.ssh->Start().ok());
  // Ten connections that never speak: four take the login slots, the rest are closed at once.
  std::vector<int> silent;
  ASSERT_NO_FATAL_FAILURE(OpenSilentConnections(flooded.port(), 10, 0, &silent));
  EXPECT_TRUE(WaitFor([&] { return flooded.counters().refused_busy >= 6; }));
  // The flooded side still dials out.
  SshPeer peer_a = a.AsPeer("a");
  flooded.SetPeers({{a.node_public, peer_a}});
  a.ssh->SetPeers({{b.node_public, SshPeer{"b", flooded.public_key(), flooded.port(), {}}}});
  flooded.Connect(a.node_public);
  EXPECT_TRUE(WaitFor([&] { return flooded.Connected(a.node_public); }));
  for (int fd : silent) close(fd);
}

// One host holds at most max_pending_logins_per_source of the login slots: a flood from
// 127.0.0.2 leaves room for a peer's login from 127.0.0.1.
TEST(SshTransport, ALoginFloodFromOneHostLeavesSlotsForOthers) {
  Node a(1), b(2);
  SshTransport::Options options;
  options.port = 0;
  options.max_pending_logins = 8;
  options.max_pending_logins_per_source = 3;
  options.handshake_timeout = std::chrono::milliseconds(3000);
  SshTransport flooded(NodeKey(2), options, nullptr);
  ASSERT_TRUE(flooded.Start().ok());
  ASSERT_TRUE(a.ssh->Start().ok());
  std::vector<int> silent;
  ASSERT_NO_FATAL_FAILURE(
      OpenSilentConnections(flooded.port(), 10, 0x7f000002 /* 127.0.0.2 */, &silent));
  EXPECT_TRUE(WaitFor([&] { return flooded.counters().refused_busy >= 7; }));
  // a logs in to the flooded server (an inbound login there) while the flood holds its slots.
  flooded.SetPeers({{a.node_public, a.AsPeer("a")}});
  a.ssh->SetPeers(
      {{b.node_public,
        SshPeer{"b", flooded.public_key(), flooded.port(), {*IpAddress::Parse("127.0.0.1")}}}});
  a.ssh->Connect(b.node_public);
  EXPECT_TRUE(WaitFor([&] { return a.ssh->Connected(b.node_public); }));
  EXPECT_EQ(flooded.counters().refused_busy, 7u) << "a's login was refused";
  for (int fd : silent) close(fd);
}

TEST(SshTransport, ATakenPortFailsOrFallsBackToAFreeOne) {
  Node first(1);
  ASSERT_TRUE(first.ssh->Start().ok());
  SshTransport::Options options;
  options.port = first.ssh->port();
  SshTransport strict(NodeKey(2), options, nullptr);
  const absl::Status s = strict.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--ssh-port"), std::string::npos) << s;
  EXPECT_NE(s.message().find("--no-ssh"), std::string::npos) << s;

  options.fall_back_to_any = true;
  SshTransport lenient(NodeKey(3), options, nullptr);
  ASSERT_TRUE(lenient.Start().ok());
  EXPECT_NE(lenient.port(), 0);
  EXPECT_NE(lenient.port(), first.ssh->port());
}

}  // namespace
}  // namespace tunnelmesh
