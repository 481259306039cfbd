// RelayServer over loopback (TLS with a test CA) against the agent's RelayClient, and against raw
// TCP, raw TLS and raw WebSocket peers that misbehave: impostor relays (another CA, another key),
// mesh scoping, connection caps, rate limits. Waits poll a condition with a deadline; nothing
// sleeps for a fixed time to let something happen.
// cpprestsdk otherwise defines a macro `U` that breaks fmt (spdlog) and anything else naming U.
#define _TURN_OFF_PLATFORM_STRING
#include "operator/relay/relay_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "cpprest/ws_client.h"
#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"
#include "lib/crypto/x509.h"
#include "lib/wire/relay_frame.h"
#include "node-agent/transport/relay_client.h"

namespace tunnelmesh {
namespace {

namespace relay = wire::relay;
namespace ws = web::websockets::client;
using std::chrono::milliseconds;

// Generous: under ASan on a loaded machine one TLS connection attempt can take seconds.
constexpr milliseconds kWait{30000};

// Polls `condition` until it holds or `timeout` passes.
template <typename Condition>
bool WaitFor(Condition condition, milliseconds timeout = kWait) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

struct Identity {
  SecretKey private_key = SecretKey::GeneratePrivate();
  PublicKey public_key = DerivePublicKey(private_key);
};

struct Received {
  PublicKey source;
  std::vector<uint8_t> payload;
};

// Collects what a RelayClient receives; thread-safe.
class Inbox {
 public:
  RelayClient::ReceiveCallback Callback() {
    return [this](const PublicKey& source, absl::Span<const uint8_t> payload) {
      absl::MutexLock lock(&mu_);
      messages_.push_back({source, std::vector<uint8_t>(payload.begin(), payload.end())});
    };
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return messages_.size();
  }
  Received at(size_t i) {
    absl::MutexLock lock(&mu_);
    return messages_.at(i);
  }

 private:
  absl::Mutex mu_;
  std::vector<Received> messages_ ABSL_GUARDED_BY(mu_);
};

// A WebSocket peer that sends whatever the test says (through cpprestsdk, exceptions caught). It
// accepts any certificate: it is a test tool, not the client under test.
class RawWebSocket {
 public:
  RawWebSocket() : client_(Config()) {
    client_.set_message_handler([this](const ws::websocket_incoming_message& message) {
      std::vector<uint8_t> bytes(message.length());
      message.body().streambuf().scopy(bytes.data(), bytes.size());
      absl::MutexLock lock(&mu_);
      frames_.push_back(std::move(bytes));
    });
    client_.set_close_handler(
        [this](ws::websocket_close_status, const utility::string_t&, const std::error_code&) {
          absl::MutexLock lock(&mu_);
          closed_ = true;
        });
  }

  bool Connect(const std::string& url) {
    try {
      client_.connect(web::uri(url)).wait();
      return true;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "raw WebSocket connect failed: " << e.what();
      return false;
    }
  }

  bool SendBinary(std::vector<uint8_t> bytes) {
    const size_t size = bytes.size();
    ws::websocket_outgoing_message message;
    message.set_binary_message(
        concurrency::streams::container_buffer<std::vector<uint8_t>>(std::move(bytes))
            .create_istream(),
        size);
    return SendMessage(message);
  }

  bool SendText(std::string text) {
    ws::websocket_outgoing_message message;
    message.set_utf8_message(std::move(text));
    return SendMessage(message);
  }

  // The next frame received, waiting for it up to kWait.
  std::optional<std::vector<uint8_t>> NextFrame() {
    if (!WaitFor([this] {
          absl::MutexLock lock(&mu_);
          return next_ < frames_.size();
        })) {
      return std::nullopt;
    }
    absl::MutexLock lock(&mu_);
    return frames_[next_++];
  }

  bool closed() {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

  // Answers the relay's Challenge as `identity` and waits for Ready.
  bool Authenticate(const Identity& identity) {
    std::optional<std::vector<uint8_t>> frame = NextFrame();
    relay::Challenge challenge;
    if (!frame || !relay::Parse(relay::Bytes(frame->data(), frame->size()), &challenge)) {
      return false;
    }
    relay::Hello hello;
    hello.client_key = identity.public_key.bytes;
    if (crypto_box_easy(hello.proof.data(), challenge.random.data(), challenge.random.size(),
                        challenge.nonce.data(), challenge.server_key.data(),
                        identity.private_key.data()) != 0) {
      return false;
    }
    std::vector<uint8_t> bytes;
    relay::Serialize(hello, &bytes);
    if (!SendBinary(bytes)) return false;
    frame = NextFrame();
    return frame && relay::ParseReady(relay::Bytes(frame->data(), frame->size()));
  }

 private:
  bool SendMessage(const ws::websocket_outgoing_message& message) {
    try {
      client_.send(message).wait();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  static ws::websocket_client_config Config() {
    ws::websocket_client_config config;
    config.set_validate_certificates(false);
    return config;
  }

  // Declared first so that the client, whose destructor may still run the handlers, goes first.
  absl::Mutex mu_;
  std::deque<std::vector<uint8_t>> frames_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  ws::websocket_callback_client client_;
};

// A TCP connection to 127.0.0.1:port with a receive timeout of `timeout_s`; -1 on failure.
int ConnectTcp(uint16_t port, int timeout_s = 10) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Opens `count` TCP connections that never speak (they count as pending until the auth timeout).
std::vector<int> OpenSilent(uint16_t port, int count) {
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) fds.push_back(ConnectTcp(port, 10));
  return fds;
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

// True when the server closed `fd` (end of stream or reset) within its receive timeout; anything
// the server sent first is dropped.
bool ClosedByServer(int fd) {
  char buf[1024];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false;
  }
}

// True when `fd` is still open and has nothing to read right now.
bool StillOpen(int fd) {
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// Speaks TLS (any certificate accepted) to 127.0.0.1:port, sends `bytes` and collects what comes
// back until the server closes. False when the handshake fails or the server never closes.
bool SendOverTlsAndWaitForClose(uint16_t port, const std::string& bytes, std::string* reply) {
  int fd = ConnectTcp(port);
  if (fd < 0) return false;
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  // A server that closes the TCP connection without close_notify has closed it, too.
  SSL_CTX_set_options(context, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL* ssl = SSL_new(context);
  SSL_set_fd(ssl, fd);
  bool closed = false;
  if (SSL_connect(ssl) == 1 && SSL_write(ssl, bytes.data(), static_cast<int>(bytes.size())) ==
                                   static_cast<int>(bytes.size())) {
    char buf[1024];
    while (true) {
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n > 0) {
        reply->append(buf, n);
        continue;
      }
      const int error = SSL_get_error(ssl, n);
      closed = error == SSL_ERROR_ZERO_RETURN || error == SSL_ERROR_SYSCALL;
      break;
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(context);
  close(fd);
  return closed;
}

// Sends `bytes` over plain TCP and waits (up to 10 s) for the server to close.
bool SendRawTcpAndWaitForClose(uint16_t port, const std::string& bytes, std::string* reply) {
  int fd = ConnectTcp(port);
  if (fd < 0) return false;
  bool closed = false;
  if (write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
    char buf[1024];
    while (true) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        closed = true;
        break;
      }
      if (n < 0) break;  // timeout
      reply->append(buf, n);
    }
  }
  close(fd);
  return closed;
}

// The coordinator's TLS identity as the operator builds it (operator/tls): the server
// certificate followed by its CA.
TlsIdentity MakeIdentity() {
  absl::StatusOr<PemPair> ca = MakeCa();
  EXPECT_TRUE(ca.ok()) << ca.status();
  absl::StatusOr<PemPair> server = IssueServerCert(*ca);
  EXPECT_TRUE(server.ok()) << server.status();
  return TlsIdentity{ca->cert_pem, server->cert_pem + ca->cert_pem, server->key_pem};
}

class RelayServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InitCrypto();
    InitCpprestThreadPool(4);
    tls_ = new TlsIdentity(MakeIdentity());
    other_tls_ = new TlsIdentity(MakeIdentity());
  }
  static void TearDownTestSuite() {
    delete tls_;
    delete other_tls_;
  }

  std::unique_ptr<RelayServer> StartServer(int port = 0, RelayServer::Options options = {},
                                           const TlsIdentity* tls = nullptr,
                                           const SecretKey* key = nullptr) {
    absl::StatusOr<std::unique_ptr<RelayServer>> server = RelayServer::Start(
        port, key != nullptr ? *key : server_key_, tls != nullptr ? *tls : *tls_,
        [this](const PublicKey& member) -> std::optional<std::string> {
          absl::MutexLock lock(&members_mu_);
          auto it = members_.find(member);
          if (it == members_.end()) return std::nullopt;
          return it->second;
        },
        std::move(options));
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }

  void TearDown() override { CloseAll(held_); }

  // A server for the connection-cap tests with its cap `cap` set to `value`. Unauthenticated
  // connections may wait far longer than the checks take, so that only the cap closes one.
  std::unique_ptr<RelayServer> StartWithCap(size_t RelayServer::Options::*cap, size_t value) {
    RelayServer::Options options;
    options.*cap = value;
    options.auth_timeout = milliseconds(20000);
    return StartServer(0, std::move(options));
  }

  // Holds `count` silent connections to `server` (in held_, closed at TearDown), then opens one
  // more: the server must close that one at once, count it under `refused`, and keep the held
  // ones open.
  void FillUpToTheCap(const RelayServer& server, size_t count,
                      const std::atomic<uint64_t> RelayCounters::*refused) {
    std::vector<int> held = OpenSilent(server.port(), static_cast<int>(count));
    held_.insert(held_.end(), held.begin(), held.end());
    const int over = ConnectTcp(server.port(), 10);
    ASSERT_GE(over, 0) << "connection " << count + 1 << " was not even accepted by the kernel";
    EXPECT_TRUE(ClosedByServer(over)) << "connection " << count + 1 << " stays open";
    close(over);
    for (int fd : held) EXPECT_TRUE(StillOpen(fd));
    EXPECT_TRUE(WaitFor([&] { return (server.counters().*refused).load() == 1; }))
        << (server.counters().*refused).load();
  }

  void AddMember(const Identity& identity, const std::string& mesh = "demo") {
    absl::MutexLock lock(&members_mu_);
    members_[identity.public_key] = mesh;
  }

  static std::string Url(uint16_t port) {
    return "wss://127.0.0.1:" + std::to_string(port) + "/relay";
  }

  static RelayClient::Options ClientOptions() {
    RelayClient::Options options;
    options.max_backoff = milliseconds(400);
    options.untrusted_initial_backoff = milliseconds(100);
    options.untrusted_max_backoff = milliseconds(400);
    options.jitter_seed = 1;
    options.trusted_ca_pem = tls_->ca_cert_pem;
    return options;
  }

  // A WireGuard transport data message of `size` bytes whose first payload byte is `tag`.
  static std::vector<uint8_t> Wg(uint8_t tag, size_t size = 32) {
    std::vector<uint8_t> message(size, 0);
    message[0] = 4;
    message[4] = tag;
    return message;
  }

  // Makes `identity` a member of `mesh` and connects it through the relay at `port`; what it
  // receives goes to `inbox` (null: nowhere).
  std::unique_ptr<RelayClient> Connected(const Identity& identity, uint16_t port, Inbox* inbox,
                                         const std::string& mesh = "demo") {
    AddMember(identity, mesh);
    auto client = std::make_unique<RelayClient>(ClientOptions());
    if (inbox != nullptr) client->SetReceiveCallback(inbox->Callback());
    absl::Status status =
        client->Connect(Url(port), identity.private_key, identity.public_key, server_public_key_);
    EXPECT_TRUE(status.ok()) << status;
    return client;
  }

  static TlsIdentity* tls_;
  static TlsIdentity* other_tls_;  // another CA's: an impostor's
  SecretKey server_key_ = SecretKey::GeneratePrivate();
  PublicKey server_public_key_ = DerivePublicKey(server_key_);
  absl::Mutex members_mu_;
  std::map<PublicKey, std::string> members_ ABSL_GUARDED_BY(members_mu_);
  std::vector<int> held_;  // silent connections of the cap tests
};

TlsIdentity* RelayServerTest::tls_ = nullptr;
TlsIdentity* RelayServerTest::other_tls_ = nullptr;

TEST_F(RelayServerTest, TwoClientsExchangeFramesBothWays) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_NE(server->port(), 0);
  EXPECT_EQ(server->public_key(), server_public_key_);
  Identity alice, bob;
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, server->port(), &bob_inbox);
  ASSERT_TRUE(a->connected());
  ASSERT_TRUE(b->connected());

  const std::vector<uint8_t> to_bob = Wg(1);
  EXPECT_TRUE(a->Send(bob.public_key, to_bob));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1; }));
  EXPECT_EQ(bob_inbox.at(0).source, alice.public_key);
  EXPECT_EQ(bob_inbox.at(0).payload, to_bob);

  std::vector<uint8_t> to_alice = Wg(0, relay::kMaxPayloadSize);
  for (size_t i = 4; i < to_alice.size(); ++i) to_alice[i] = static_cast<uint8_t>(i * 7);
  EXPECT_TRUE(b->Send(alice.public_key, to_alice));
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(b->Send(alice.public_key, Wg(static_cast<uint8_t>(i), 1400)));
  }
  ASSERT_TRUE(WaitFor([&] { return alice_inbox.size() == 101; }));
  EXPECT_EQ(alice_inbox.at(0).source, bob.public_key);
  EXPECT_EQ(alice_inbox.at(0).payload, to_alice);
  for (int i = 0; i < 100; ++i) {  // in order
    EXPECT_EQ(alice_inbox.at(1 + i).payload[4], static_cast<uint8_t>(i));
  }

  const RelayCounters& counters = server->counters();
  EXPECT_EQ(counters.connections.load(), 2u);
  EXPECT_EQ(counters.sessions.load(), 2);
  // The relay thread counts a frame just after handing it to the socket, which may already have
  // delivered it.
  ASSERT_TRUE(WaitFor([&] { return counters.frames_relayed.load() == 102; }))
      << counters.frames_relayed.load();
  EXPECT_EQ(counters.bytes_relayed.load(), to_bob.size() + to_alice.size() + 100 * 1400);
  EXPECT_EQ(counters.auth_failures.load() + counters.malformed.load() +
                counters.unknown_destination.load() + counters.queue_overflow.load() +
                counters.budget_overflow.load() + counters.rate_limited.load() +
                counters.bad_payload.load() + counters.cross_mesh.load() +
                counters.tls_failures.load(),
            0u);
  ASSERT_TRUE(WaitFor([&] { return b->counters().frames_sent.load() == 101; }));
  EXPECT_EQ(a->counters().frames_received.load(), 101u);
  EXPECT_EQ(b->counters().frames_received.load(), 1u);

  // Payloads the protocol cannot carry are refused before the wire.
  EXPECT_FALSE(a->Send(bob.public_key, std::vector<uint8_t>(relay::kMaxPayloadSize + 1)));
  EXPECT_FALSE(a->Send(bob.public_key, {}));
  EXPECT_EQ(a->counters().dropped_invalid.load(), 2u);
}

TEST_F(RelayServerTest, NonMemberIsRefusedAndCountedThenAdmittedWhenItJoins) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  Identity stranger;
  RelayClient client(ClientOptions());
  absl::Status status = client.Connect(Url(server->port()), stranger.private_key,
                                       stranger.public_key, server_public_key_);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_NE(status.message().find("not_member"), std::string::npos) << status;
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(server->counters().auth_failures.load(), 1u);
  EXPECT_EQ(server->counters().sessions.load(), 0);
  EXPECT_EQ(client.counters().refused.load(), 1u);
  EXPECT_FALSE(client.Send(stranger.public_key, {1}));
  EXPECT_EQ(client.counters().dropped_disconnected.load(), 1u);

  // Membership can come later; the client keeps trying.
  AddMember(stranger);
  ASSERT_TRUE(WaitFor([&] { return client.connected(); }));
  EXPECT_EQ(server->counters().sessions.load(), 1);
}

TEST_F(RelayServerTest, KeyMismatchIsRetriedUntilTheRightRelayIsBack) {
  // An impostor with the right certificate (say, a stolen one) but not the relay's key.
  const SecretKey impostor_key = SecretKey::GeneratePrivate();
  std::unique_ptr<RelayServer> impostor = StartServer(0, {}, nullptr, &impostor_key);
  ASSERT_NE(impostor, nullptr);
  const uint16_t port = impostor->port();
  Identity alice;
  AddMember(alice);
  RelayClient client(ClientOptions());
  absl::Status status =
      client.Connect(Url(port), alice.private_key, alice.public_key, server_public_key_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("presents key"), std::string::npos) << status;
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(impostor->counters().sessions.load(), 0);
  // It keeps trying, with backoff, instead of giving up.
  ASSERT_TRUE(WaitFor([&] { return client.counters().server_key_mismatch.load() >= 2; }));
  const uint64_t attempts = client.counters().connect_attempts.load();

  impostor.reset();
  std::unique_ptr<RelayServer> server = StartServer(port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(WaitFor([&] { return client.connected(); }));
  EXPECT_GT(client.counters().connect_attempts.load(), attempts);
  EXPECT_EQ(server->counters().sessions.load(), 1);
}

TEST_F(RelayServerTest, TlsWithThePinnedCaWorksAndAnotherCaIsRefused) {
  // The relay of another CA: the client refuses it during the TLS handshake, before any frame.
  std::unique_ptr<RelayServer> impostor = StartServer(0, {}, other_tls_);
  ASSERT_NE(impostor, nullptr);
  const uint16_t port = impostor->port();
  Identity alice, bob;
  AddMember(alice);
  AddMember(bob);
  RelayClient client(ClientOptions());
  absl::Status status =
      client.Connect(Url(port), alice.private_key, alice.public_key, server_public_key_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("pinned coordinator CA"), std::string::npos) << status;
  EXPECT_GE(client.counters().certificate_refused.load(), 1u);
  EXPECT_EQ(client.counters().server_key_mismatch.load(), 0u);
  EXPECT_EQ(impostor->counters().connections.load(), 0u) << "no WebSocket was ever opened";
  ASSERT_TRUE(WaitFor([&] { return client.counters().certificate_refused.load() >= 2; }));
  EXPECT_FALSE(client.connected());

  // A client that pins the impostor's CA talks to it (TLS itself works), then the real relay
  // comes back and the first client finds it.
  RelayClient::Options other = ClientOptions();
  other.trusted_ca_pem = other_tls_->ca_cert_pem;
  RelayClient fooled(other);
  EXPECT_TRUE(fooled.Connect(Url(port), bob.private_key, bob.public_key, server_public_key_).ok());
  EXPECT_EQ(fooled.counters().certificate_refused.load(), 0u);
  impostor.reset();
  std::unique_ptr<RelayServer> server = StartServer(port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(WaitFor([&] { return client.connected(); }));
  EXPECT_EQ(server->counters().sessions.load(), 1);
}

TEST_F(RelayServerTest, PlainWebSocketIsRefusedWithAnAnswer) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::string reply;
  EXPECT_TRUE(SendRawTcpAndWaitForClose(
      server->port(),
      "GET /relay HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      &reply));
  EXPECT_NE(reply.find("426"), std::string::npos) << reply;
  EXPECT_NE(reply.find("TLS only (wss://)"), std::string::npos) << reply;
  ASSERT_TRUE(WaitFor([&] { return server->counters().plaintext_refused.load() == 1; }));

  // The agent itself no longer dials ws://.
  Identity alice;
  RelayClient client(ClientOptions());
  absl::Status status =
      client.Connect("ws://127.0.0.1:" + std::to_string(server->port()) + "/relay",
                     alice.private_key, alice.public_key, server_public_key_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("upgrade tunnelmesh-operator"), std::string::npos) << status;
}

TEST_F(RelayServerTest, SendReachesOnlyTheSameMesh) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  Identity alice, bob, eve;
  Inbox alice_inbox, bob_inbox, eve_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, server->port(), &bob_inbox);
  std::unique_ptr<RelayClient> e = Connected(eve, server->port(), &eve_inbox, "other");
  ASSERT_TRUE(e->Send(alice.public_key, Wg(1)));
  ASSERT_TRUE(a->Send(eve.public_key, Wg(2)));
  const RelayCounters& counters = server->counters();
  ASSERT_TRUE(WaitFor([&] { return counters.cross_mesh.load() == 2; }));
  ASSERT_TRUE(a->Send(bob.public_key, Wg(3)));  // ordered after Alice's cross-mesh Send
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1; }));
  EXPECT_EQ(alice_inbox.size(), 0u);
  EXPECT_EQ(eve_inbox.size(), 0u);
  EXPECT_EQ(counters.frames_relayed.load(), 1u);
}

TEST_F(RelayServerTest, PayloadThatIsNotWireGuardIsDroppedAndCounted) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  Identity alice, bob;
  Inbox bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), nullptr);
  std::unique_ptr<RelayClient> b = Connected(bob, server->port(), &bob_inbox);
  const std::string text = "cross-mesh payload, not WireGuard";
  ASSERT_TRUE(a->Send(bob.public_key, std::vector<uint8_t>(text.begin(), text.end())));
  ASSERT_TRUE(a->Send(bob.public_key, Wg(9)));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1; }));
  EXPECT_EQ(bob_inbox.at(0).payload, Wg(9));
  EXPECT_EQ(server->counters().bad_payload.load(), 1u);
}

TEST_F(RelayServerTest, SessionRateLimitCountersMove) {
  FakeClock clock;  // never advanced: only the burst passes
  RelayServer::Options options;
  options.limits.frames_per_second = 5;
  options.clock = &clock;
  std::unique_ptr<RelayServer> server = StartServer(0, options);
  ASSERT_NE(server, nullptr);
  Identity alice, bob;
  Inbox bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), nullptr);
  std::unique_ptr<RelayClient> b = Connected(bob, server->port(), &bob_inbox);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(a->Send(bob.public_key, Wg(static_cast<uint8_t>(i))));
  const RelayCounters& counters = server->counters();
  ASSERT_TRUE(WaitFor([&] { return counters.rate_limited.load() == 15; }))
      << counters.rate_limited.load();
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 5; }));
  EXPECT_EQ(counters.frames_relayed.load(), 5u);
  EXPECT_TRUE(a->connected());
}

TEST_F(RelayServerTest, ConnectionsOverThePerSourceCapAreClosedAtOnce) {
  std::unique_ptr<RelayServer> server =
      StartWithCap(&RelayServer::Options::max_connections_per_source, 4);
  ASSERT_NE(server, nullptr);
  FillUpToTheCap(*server, 4, &RelayCounters::refused_source_cap);
  EXPECT_EQ(server->counters().refused_pending_cap.load(), 0u);
  // A freed slot is usable again.
  close(held_.back());
  held_.pop_back();
  Identity alice;
  AddMember(alice);
  ASSERT_TRUE(WaitFor([&] {
    RelayClient probe(ClientOptions());
    return probe
        .Connect(Url(server->port()), alice.private_key, alice.public_key, server_public_key_)
        .ok();
  }));
}

TEST_F(RelayServerTest, PendingCapCountsOnlyUnauthenticatedConnections) {
  std::unique_ptr<RelayServer> server =
      StartWithCap(&RelayServer::Options::max_pending_connections, 3);
  ASSERT_NE(server, nullptr);
  Identity alice;
  // Authenticated, so not pending.
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), nullptr);
  FillUpToTheCap(*server, 3, &RelayCounters::refused_pending_cap);
  EXPECT_EQ(server->counters().refused_source_cap.load(), 0u);
  EXPECT_TRUE(a->connected());
}

TEST_F(RelayServerTest, ConnectionsOverTheTotalCapAreClosedAtOnce) {
  std::unique_ptr<RelayServer> server = StartWithCap(&RelayServer::Options::max_connections, 2);
  ASSERT_NE(server, nullptr);
  FillUpToTheCap(*server, 2, &RelayCounters::refused_total_cap);
}

TEST_F(RelayServerTest, ConnectReportsBadArgumentsAndUnreachableRelays) {
  Identity alice, other;
  RelayClient bad_url;
  EXPECT_EQ(bad_url
                .Connect("http://127.0.0.1:1/relay", alice.private_key, alice.public_key,
                         server_public_key_)
                .code(),
            absl::StatusCode::kInvalidArgument);
  RelayClient bad_pair;
  EXPECT_EQ(
      bad_pair.Connect(Url(1), alice.private_key, other.public_key, server_public_key_).code(),
      absl::StatusCode::kInvalidArgument);

  // Nothing listens on the port a stopped server had.
  uint16_t port;
  {
    std::unique_ptr<RelayServer> server = StartServer();
    ASSERT_NE(server, nullptr);
    port = server->port();
  }
  RelayClient unreachable(ClientOptions());
  absl::Status status =
      unreachable.Connect(Url(port), alice.private_key, alice.public_key, server_public_key_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_FALSE(unreachable.Send(other.public_key, {1}));
}

TEST_F(RelayServerTest, GarbageIsCountedAndHarmsNothing) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->port();
  Identity alice, bob, carol;
  AddMember(carol);
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, port, &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, port, &bob_inbox);
  const RelayCounters& counters = server->counters();

  // Raw TCP: a TLS record holding a ClientHello whose session id runs past its end.
  std::string hello("\x16\x03\x01\x00\x28\x01\x00\x00\x24\x03\x03", 11);
  hello += std::string(32, 'r') + "\xff\xff";
  std::string reply;
  EXPECT_TRUE(SendRawTcpAndWaitForClose(port, hello, &reply));
  ASSERT_TRUE(WaitFor([&] { return counters.tls_failures.load() == 1; }));
  // Over TLS: HTTP for another path, then not HTTP.
  reply.clear();
  EXPECT_TRUE(SendOverTlsAndWaitForClose(
      port,
      "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      &reply));
  EXPECT_NE(reply.find("404"), std::string::npos) << reply;
  reply.clear();
  EXPECT_TRUE(SendOverTlsAndWaitForClose(port, "garbage\r\n\r\n", &reply));
  ASSERT_TRUE(WaitFor([&] { return counters.bad_upgrades.load() == 2; }));

  // A WebSocket peer that sends garbage instead of a Hello is refused.
  {
    RawWebSocket raw;
    ASSERT_TRUE(raw.Connect(Url(port)));
    ASSERT_TRUE(raw.NextFrame().has_value());  // the Challenge
    ASSERT_TRUE(raw.SendBinary({0xde, 0xad, 0xbe, 0xef}));
    std::optional<std::vector<uint8_t>> error_frame = raw.NextFrame();
    ASSERT_TRUE(error_frame.has_value());
    relay::Error error;
    ASSERT_TRUE(relay::Parse(relay::Bytes(error_frame->data(), error_frame->size()), &error));
    EXPECT_EQ(error.code, relay::ErrorCode::kProtocol);
    ASSERT_TRUE(WaitFor([&] { return raw.closed(); }));
  }
  EXPECT_EQ(counters.auth_failures.load(), 1u);
  EXPECT_EQ(counters.malformed.load(), 1u);

  // An authenticated peer sending bad frames: each is counted, the connection stays.
  RawWebSocket raw;
  ASSERT_TRUE(raw.Connect(Url(port)));
  ASSERT_TRUE(raw.Authenticate(carol));
  ASSERT_TRUE(raw.SendBinary({0x63}));  // unknown type
  ASSERT_TRUE(raw.SendBinary(std::vector<uint8_t>(relay::kAddressedHeaderSize, 4)));  // no payload
  ASSERT_TRUE(raw.SendText("hello?"));
  std::vector<uint8_t> huge(relay::kMaxFrameSize + 5000, 4);
  ASSERT_TRUE(raw.SendBinary(huge));
  std::vector<uint8_t> to_nobody;
  const Identity nobody;
  const std::vector<uint8_t> payload = Wg(3);
  ASSERT_TRUE(
      relay::Serialize(relay::Send{nobody.public_key.bytes, relay::Bytes(payload)}, &to_nobody));
  ASSERT_TRUE(raw.SendBinary(to_nobody));
  ASSERT_TRUE(WaitFor([&] {
    return counters.malformed.load() == 4 && counters.oversized.load() == 1 &&
           counters.unknown_destination.load() == 1;
  })) << "malformed="
      << counters.malformed.load() << " oversized=" << counters.oversized.load()
      << " unknown=" << counters.unknown_destination.load();

  // ... and it still relays.
  std::vector<uint8_t> to_alice;
  ASSERT_TRUE(
      relay::Serialize(relay::Send{alice.public_key.bytes, relay::Bytes(payload)}, &to_alice));
  ASSERT_TRUE(raw.SendBinary(to_alice));
  ASSERT_TRUE(WaitFor([&] { return alice_inbox.size() == 1; }));
  EXPECT_EQ(alice_inbox.at(0).source, carol.public_key);
  EXPECT_EQ(alice_inbox.at(0).payload, payload);
  ASSERT_TRUE(b->Send(carol.public_key, payload));
  std::optional<std::vector<uint8_t>> delivered = raw.NextFrame();
  ASSERT_TRUE(delivered.has_value());
  relay::Deliver deliver;
  ASSERT_TRUE(relay::Parse(relay::Bytes(delivered->data(), delivered->size()), &deliver));
  EXPECT_EQ(PublicKey{deliver.source}, bob.public_key);
  EXPECT_FALSE(raw.closed());

  // The well-behaved clients never noticed.
  ASSERT_TRUE(a->Send(bob.public_key, payload));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1; }));
  EXPECT_TRUE(a->connected());
  EXPECT_TRUE(b->connected());
  EXPECT_EQ(counters.auth_failures.load(), 1u);
  EXPECT_EQ(counters.sessions.load(), 3);
}

TEST_F(RelayServerTest, SilentPeerIsRefusedAfterTheAuthTimeout) {
  RelayServer::Options options;
  options.auth_timeout = milliseconds(2000);  // covers TLS and the upgrade too
  std::unique_ptr<RelayServer> server = StartServer(0, options);
  ASSERT_NE(server, nullptr);
  RawWebSocket raw;
  ASSERT_TRUE(raw.Connect(Url(server->port())));
  ASSERT_TRUE(raw.NextFrame().has_value());  // the Challenge, left unanswered
  std::optional<std::vector<uint8_t>> error_frame = raw.NextFrame();
  ASSERT_TRUE(error_frame.has_value());
  relay::Error error;
  ASSERT_TRUE(relay::Parse(relay::Bytes(error_frame->data(), error_frame->size()), &error));
  EXPECT_EQ(error.code, relay::ErrorCode::kAuthTimeout);
  ASSERT_TRUE(WaitFor([&] { return raw.closed(); }));
  EXPECT_EQ(server->counters().auth_failures.load(), 1u);
}

TEST_F(RelayServerTest, BusyPortNamesTheFlag) {
  std::unique_ptr<RelayServer> first = StartServer();
  ASSERT_NE(first, nullptr);
  RelayServer second(server_key_, *tls_,
                     [](const PublicKey&) { return std::optional<std::string>("demo"); });
  absl::Status status = second.Listen(first->port());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("--relay-port"), std::string::npos) << status;
  EXPECT_EQ(second.port(), 0);
  EXPECT_EQ(second.Listen(70000).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RelayServerTest, ClientsReconnectAfterTheServerRestarts) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->port();
  Identity alice, bob;
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, port, &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, port, &bob_inbox);

  server.reset();
  ASSERT_TRUE(WaitFor([&] { return !a->connected() && !b->connected(); }));
  EXPECT_FALSE(a->Send(bob.public_key, Wg(1)));
  EXPECT_EQ(a->counters().dropped_disconnected.load(), 1u);

  server = StartServer(port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(WaitFor([&] { return a->connected() && b->connected(); }));
  EXPECT_EQ(server->counters().sessions.load(), 2);
  EXPECT_GE(a->counters().sessions.load(), 2u);

  const std::vector<uint8_t> payload = Wg(42);
  ASSERT_TRUE(a->Send(bob.public_key, payload));
  ASSERT_TRUE(b->Send(alice.public_key, payload));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1 && alice_inbox.size() == 1; }));
  EXPECT_EQ(bob_inbox.at(0).source, alice.public_key);
  EXPECT_EQ(alice_inbox.at(0).source, bob.public_key);
}

}  // namespace
}  // namespace tunnelmesh
