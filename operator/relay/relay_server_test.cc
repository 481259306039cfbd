// RelayServer over loopback against the agent's RelayClient, and against raw TCP and raw
// WebSocket peers that misbehave. Waits poll a condition with a deadline; nothing sleeps for a
// fixed time to let something happen.
// cpprestsdk otherwise defines a macro `U` that breaks fmt (spdlog) and anything else naming U.
#define _TURN_OFF_PLATFORM_STRING
#include "operator/relay/relay_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <deque>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "cpprest/ws_client.h"
#include "gtest/gtest.h"
#include "lib/wire/relay_frame.h"
#include "node-agent/transport/relay_client.h"

namespace tunnelmesh {
namespace {

namespace relay = wire::relay;
namespace ws = web::websockets::client;
using std::chrono::milliseconds;

constexpr milliseconds kWait{10000};

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

// A WebSocket peer that sends whatever the test says (through cpprestsdk, exceptions caught).
class RawWebSocket {
 public:
  RawWebSocket() {
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

  // Declared first so that the client, whose destructor may still run the handlers, goes first.
  absl::Mutex mu_;
  std::deque<std::vector<uint8_t>> frames_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  ws::websocket_callback_client client_;
};

// Sends `bytes` over plain TCP and waits (up to 10 s) for the server to close.
bool SendRawTcpAndWaitForClose(uint16_t port, const std::string& bytes, std::string* reply) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  bool closed = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
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

class RelayServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InitCrypto();
    InitCpprestThreadPool(4);
  }

  std::unique_ptr<RelayServer> StartServer(int port = 0, RelayServer::Options options = {}) {
    absl::StatusOr<std::unique_ptr<RelayServer>> server = RelayServer::Start(
        port, server_key_,
        [this](const PublicKey& key) {
          absl::MutexLock lock(&members_mu_);
          return members_.count(key) > 0;
        },
        std::move(options));
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }

  void AddMember(const Identity& identity) {
    absl::MutexLock lock(&members_mu_);
    members_.insert(identity.public_key);
  }

  static std::string Url(uint16_t port) {
    return "ws://127.0.0.1:" + std::to_string(port) + "/relay";
  }

  static RelayClient::Options ClientOptions() {
    RelayClient::Options options;
    options.max_backoff = milliseconds(400);
    options.jitter_seed = 1;
    return options;
  }

  std::unique_ptr<RelayClient> Connected(const Identity& identity, uint16_t port, Inbox* inbox) {
    auto client = std::make_unique<RelayClient>(ClientOptions());
    if (inbox != nullptr) client->SetReceiveCallback(inbox->Callback());
    absl::Status status =
        client->Connect(Url(port), identity.private_key, identity.public_key, server_public_key_);
    EXPECT_TRUE(status.ok()) << status;
    return client;
  }

  SecretKey server_key_ = SecretKey::GeneratePrivate();
  PublicKey server_public_key_ = DerivePublicKey(server_key_);
  absl::Mutex members_mu_;
  std::set<PublicKey> members_ ABSL_GUARDED_BY(members_mu_);
};

TEST_F(RelayServerTest, TwoClientsExchangeFramesBothWays) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_NE(server->port(), 0);
  EXPECT_EQ(server->public_key(), server_public_key_);
  Identity alice, bob;
  AddMember(alice);
  AddMember(bob);
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, server->port(), &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, server->port(), &bob_inbox);
  ASSERT_TRUE(a->connected());
  ASSERT_TRUE(b->connected());

  const std::vector<uint8_t> to_bob = {4, 0, 0, 0, 1, 2, 3};
  EXPECT_TRUE(a->Send(bob.public_key, to_bob));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1; }));
  EXPECT_EQ(bob_inbox.at(0).source, alice.public_key);
  EXPECT_EQ(bob_inbox.at(0).payload, to_bob);

  std::vector<uint8_t> to_alice(relay::kMaxPayloadSize);
  for (size_t i = 0; i < to_alice.size(); ++i) to_alice[i] = static_cast<uint8_t>(i * 7);
  EXPECT_TRUE(b->Send(alice.public_key, to_alice));
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(b->Send(alice.public_key, std::vector<uint8_t>(1400, static_cast<uint8_t>(i))));
  }
  ASSERT_TRUE(WaitFor([&] { return alice_inbox.size() == 101; }));
  EXPECT_EQ(alice_inbox.at(0).source, bob.public_key);
  EXPECT_EQ(alice_inbox.at(0).payload, to_alice);
  for (int i = 0; i < 100; ++i) {  // in order
    EXPECT_EQ(alice_inbox.at(1 + i).payload[0], static_cast<uint8_t>(i));
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
                counters.unknown_destination.load() + counters.queue_overflow.load(),
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

TEST_F(RelayServerTest, ClientRefusesARelayWithAnotherKey) {
  std::unique_ptr<RelayServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  Identity alice;
  AddMember(alice);
  const PublicKey stale_key = DerivePublicKey(SecretKey::GeneratePrivate());
  RelayClient client(ClientOptions());
  absl::Status status =
      client.Connect(Url(server->port()), alice.private_key, alice.public_key, stale_key);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(client.counters().server_key_mismatch.load(), 1u);
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(server->counters().sessions.load(), 0);
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
  AddMember(alice);
  AddMember(bob);
  AddMember(carol);
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, port, &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, port, &bob_inbox);
  const RelayCounters& counters = server->counters();

  // Raw TCP: not HTTP at all, then HTTP for another path.
  std::string reply;
  EXPECT_TRUE(
      SendRawTcpAndWaitForClose(port, std::string("\x16\x03\x01\x00\xff garbage\r\n\r\n"), &reply));
  reply.clear();
  EXPECT_TRUE(SendRawTcpAndWaitForClose(
      port,
      "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      &reply));
  EXPECT_NE(reply.find("404"), std::string::npos) << reply;
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
  const std::vector<uint8_t> payload = {1, 2, 3};
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
  options.auth_timeout = milliseconds(300);
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
  RelayServer second(server_key_, [](const PublicKey&) { return true; });
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
  AddMember(alice);
  AddMember(bob);
  Inbox alice_inbox, bob_inbox;
  std::unique_ptr<RelayClient> a = Connected(alice, port, &alice_inbox);
  std::unique_ptr<RelayClient> b = Connected(bob, port, &bob_inbox);

  server.reset();
  ASSERT_TRUE(WaitFor([&] { return !a->connected() && !b->connected(); }));
  EXPECT_FALSE(a->Send(bob.public_key, {1}));
  EXPECT_EQ(a->counters().dropped_disconnected.load(), 1u);

  server = StartServer(port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(WaitFor([&] { return a->connected() && b->connected(); }));
  EXPECT_EQ(server->counters().sessions.load(), 2);
  EXPECT_GE(a->counters().sessions.load(), 2u);

  const std::vector<uint8_t> payload = {4, 0, 0, 0, 42};
  ASSERT_TRUE(a->Send(bob.public_key, payload));
  ASSERT_TRUE(b->Send(alice.public_key, payload));
  ASSERT_TRUE(WaitFor([&] { return bob_inbox.size() == 1 && alice_inbox.size() == 1; }));
  EXPECT_EQ(bob_inbox.at(0).source, alice.public_key);
  EXPECT_EQ(alice_inbox.at(0).source, bob.public_key);
}

}  // namespace
}  // namespace tunnelmesh
