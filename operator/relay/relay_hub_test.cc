// RelayHub with fake connections and a fake clock: authentication, routing, newest-wins, mesh
// scoping, the payload rule, rate limits and every drop counter.
#include "operator/relay/relay_hub.h"

#include <sodium.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"
#include "lib/disco/message.h"

namespace tunnelmesh {
namespace {

namespace relay = wire::relay;

class FakeConnection : public RelayConnection {
 public:
  explicit FakeConnection(size_t capacity = 1000) : capacity_(capacity) {}

  SendResult Send(std::vector<uint8_t> frame, bool droppable) override {
    if (droppable && over_budget) return SendResult::kOverBudget;
    if (droppable && data_frames_ >= capacity_) return SendResult::kQueueFull;
    if (droppable) ++data_frames_;
    frames.push_back(std::move(frame));
    return SendResult::kQueued;
  }
  void Close() override { ++close_calls; }
  void Authenticated() override { ++authenticated_calls; }

  relay::Bytes Last() const { return relay::Bytes(frames.back().data(), frames.back().size()); }
  std::optional<relay::FrameType> LastType() const {
    return frames.empty() ? std::nullopt : relay::Classify(Last());
  }

  std::vector<std::vector<uint8_t>> frames;
  int close_calls = 0;
  int authenticated_calls = 0;
  bool over_budget = false;  // as the transport says when the relay-wide byte budget is spent

 private:
  size_t capacity_;
  size_t data_frames_ = 0;
};

struct Member {
  SecretKey private_key = SecretKey::GeneratePrivate();
  PublicKey public_key = DerivePublicKey(private_key);
};

class RelayHubTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }

  RelayHubTest() : RelayHubTest(RelayHub::Limits()) {}
  explicit RelayHubTest(RelayHub::Limits limits)
      : hub_(
            server_key_,
            [this](const PublicKey& key) -> std::optional<std::string> {
              if (auto it = other_mesh_.find(key); it != other_mesh_.end()) return it->second;
              if (members_.count(key) > 0) return "demo";
              return std::nullopt;
            },
            [this](uint8_t* out, size_t size) {
              for (size_t i = 0; i < size; ++i) out[i] = static_cast<uint8_t>(counter_++);
            },
            limits, &clock_) {}

  // The Hello a client holding `member` sends for the Challenge `connection` received.
  std::vector<uint8_t> HelloFor(const FakeConnection& connection, const Member& member) {
    relay::Challenge challenge;
    EXPECT_TRUE(relay::Parse(
        relay::Bytes(connection.frames.at(0).data(), connection.frames.at(0).size()), &challenge));
    relay::Hello hello;
    hello.client_key = member.public_key.bytes;
    EXPECT_EQ(crypto_box_easy(hello.proof.data(), challenge.random.data(), challenge.random.size(),
                              challenge.nonce.data(), challenge.server_key.data(),
                              member.private_key.data()),
              0);
    std::vector<uint8_t> frame;
    relay::Serialize(hello, &frame);
    return frame;
  }

  void Authenticate(FakeConnection& connection, const Member& member) {
    hub_.Opened(&connection);
    hub_.Received(&connection, HelloFor(connection, member));
    ASSERT_EQ(connection.LastType(), relay::FrameType::kReady);
  }

  // A WireGuard transport data message (type 4, reserved zero) starting with `tail`, 32 bytes.
  static std::vector<uint8_t> Wg(std::initializer_list<uint8_t> tail) {
    std::vector<uint8_t> message(std::max<size_t>(4 + tail.size(), 32), 0);
    message[0] = 4;
    std::copy(tail.begin(), tail.end(), message.begin() + 4);
    return message;
  }

  static std::vector<uint8_t> SendFrame(const PublicKey& to, std::vector<uint8_t> payload) {
    std::vector<uint8_t> frame;
    EXPECT_TRUE(relay::Serialize(
        relay::Send{to.bytes, relay::Bytes(payload.data(), payload.size())}, &frame));
    return frame;
  }

  relay::ErrorCode LastErrorCode(const FakeConnection& connection) {
    relay::Error error;
    EXPECT_TRUE(relay::Parse(connection.Last(), &error));
    return error.code;
  }

  SecretKey server_key_ = SecretKey::GeneratePrivate();
  std::set<PublicKey> members_;                  // of mesh "demo"
  std::map<PublicKey, std::string> other_mesh_;  // of other meshes
  uint8_t counter_ = 0;
  FakeClock clock_;
  RelayHub hub_;
};

TEST_F(RelayHubTest, ChallengeCarriesServerKeyAndFreshRandom) {
  FakeConnection a, b;
  hub_.Opened(&a);
  hub_.Opened(&b);
  relay::Challenge ca, cb;
  ASSERT_TRUE(relay::Parse(a.Last(), &ca));
  ASSERT_TRUE(relay::Parse(b.Last(), &cb));
  EXPECT_EQ(PublicKey{ca.server_key}, DerivePublicKey(server_key_));
  EXPECT_NE(ca.nonce, cb.nonce);
  EXPECT_NE(ca.random, cb.random);
  EXPECT_EQ(hub_.counters().connections.load(), 2u);
}

TEST_F(RelayHubTest, AuthenticatedMembersExchangeFrames) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);
  EXPECT_EQ(hub_.counters().sessions.load(), 2);

  hub_.Received(&a, SendFrame(bob.public_key, Wg({1, 2, 3, 4})));
  ASSERT_EQ(b.LastType(), relay::FrameType::kDeliver);
  relay::Deliver deliver;
  ASSERT_TRUE(relay::Parse(b.Last(), &deliver));
  EXPECT_EQ(PublicKey{deliver.source}, alice.public_key);
  EXPECT_EQ(std::vector<uint8_t>(deliver.payload.begin(), deliver.payload.end()), Wg({1, 2, 3, 4}));

  hub_.Received(&b, SendFrame(alice.public_key, Wg({9})));
  ASSERT_EQ(a.LastType(), relay::FrameType::kDeliver);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(hub_.counters().bytes_relayed.load(), 64u);
  EXPECT_EQ(a.authenticated_calls, 1);
  EXPECT_EQ(b.authenticated_calls, 1);
  EXPECT_EQ(a.close_calls + b.close_calls, 0);
}

TEST_F(RelayHubTest, ProofForAnotherKeyIsRefused) {
  Member alice, mallory;
  members_ = {alice.public_key};
  FakeConnection c;
  hub_.Opened(&c);
  // Mallory boxes with her own key but names Alice's.
  std::vector<uint8_t> hello = HelloFor(c, mallory);
  std::copy(alice.public_key.bytes.begin(), alice.public_key.bytes.end(), hello.begin() + 1);
  hub_.Received(&c, hello);
  EXPECT_EQ(LastErrorCode(c), relay::ErrorCode::kAuthFailed);
  EXPECT_EQ(c.close_calls, 1);
  EXPECT_EQ(hub_.counters().auth_failures.load(), 1u);
  EXPECT_EQ(hub_.counters().sessions.load(), 0);
}

TEST_F(RelayHubTest, HelloReplayedOnAnotherConnectionIsRefused) {
  Member alice;
  members_ = {alice.public_key};
  FakeConnection first, second;
  hub_.Opened(&first);
  hub_.Opened(&second);
  hub_.Received(&second, HelloFor(first, alice));
  EXPECT_EQ(LastErrorCode(second), relay::ErrorCode::kAuthFailed);
}

TEST_F(RelayHubTest, NonMemberIsRefused) {
  Member stranger;
  FakeConnection c;
  hub_.Opened(&c);
  hub_.Received(&c, HelloFor(c, stranger));
  EXPECT_EQ(LastErrorCode(c), relay::ErrorCode::kNotMember);
  EXPECT_EQ(c.close_calls, 1);
  EXPECT_EQ(hub_.counters().auth_failures.load(), 1u);
  // Nothing it sends afterwards is looked at.
  hub_.Received(&c, SendFrame(stranger.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().malformed.load(), 0u);
  EXPECT_EQ(c.close_calls, 1);
}

TEST_F(RelayHubTest, AnythingButHelloFirstFailsAuth) {
  Member alice;
  members_ = {alice.public_key};
  FakeConnection c1, c2, c3;
  hub_.Opened(&c1);
  hub_.Received(&c1, SendFrame(alice.public_key, Wg({1})));
  EXPECT_EQ(LastErrorCode(c1), relay::ErrorCode::kProtocol);
  hub_.Opened(&c2);
  hub_.ReceivedText(&c2);
  EXPECT_EQ(LastErrorCode(c2), relay::ErrorCode::kProtocol);
  hub_.Opened(&c3);
  hub_.ReceivedOversized(&c3);
  EXPECT_EQ(LastErrorCode(c3), relay::ErrorCode::kProtocol);
  EXPECT_EQ(hub_.counters().auth_failures.load(), 3u);
  EXPECT_EQ(hub_.counters().malformed.load(), 2u);
  EXPECT_EQ(hub_.counters().oversized.load(), 1u);
}

TEST_F(RelayHubTest, AuthDeadlineRefusesOnlyUnauthenticated) {
  Member alice;
  members_ = {alice.public_key};
  FakeConnection slow, fine;
  hub_.Opened(&slow);
  Authenticate(fine, alice);
  hub_.AuthDeadline(&slow);
  hub_.AuthDeadline(&fine);
  EXPECT_EQ(LastErrorCode(slow), relay::ErrorCode::kAuthTimeout);
  EXPECT_EQ(slow.close_calls, 1);
  EXPECT_EQ(fine.close_calls, 0);
  EXPECT_EQ(fine.LastType(), relay::FrameType::kReady);
  EXPECT_EQ(hub_.counters().auth_failures.load(), 1u);
}

TEST_F(RelayHubTest, BadFramesAfterAuthAreCountedAndTheConnectionStays) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a;
  Authenticate(a, alice);
  hub_.Received(&a, {});                           // empty
  hub_.Received(&a, {99, 1, 2});                   // unknown type
  hub_.Received(&a, std::vector<uint8_t>(33, 4));  // Send without payload
  hub_.Received(&a, HelloFor(a, alice));           // Hello again
  hub_.ReceivedText(&a);
  hub_.ReceivedOversized(&a);
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));  // Bob is not connected
  EXPECT_EQ(hub_.counters().malformed.load(), 5u);
  EXPECT_EQ(hub_.counters().oversized.load(), 1u);
  EXPECT_EQ(hub_.counters().unknown_destination.load(), 1u);
  EXPECT_EQ(hub_.counters().auth_failures.load(), 0u);
  EXPECT_EQ(a.close_calls, 0);
}

TEST_F(RelayHubTest, NewestConnectionForAKeyWins) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection old_a, new_a, b;
  Authenticate(old_a, alice);
  Authenticate(b, bob);
  Authenticate(new_a, alice);
  EXPECT_EQ(LastErrorCode(old_a), relay::ErrorCode::kReplaced);
  EXPECT_EQ(old_a.close_calls, 1);
  EXPECT_EQ(new_a.close_calls, 0);

  // The old connection is closing: what it still sends is ignored.
  hub_.Received(&old_a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(b.LastType(), relay::FrameType::kReady);

  // Its late close does not unroute the new one.
  hub_.Closed(&old_a);
  hub_.Received(&b, SendFrame(alice.public_key, Wg({7, 7})));
  EXPECT_EQ(new_a.LastType(), relay::FrameType::kDeliver);
  EXPECT_EQ(hub_.counters().sessions.load(), 2);
}

TEST_F(RelayHubTest, ClosedConnectionIsUnrouted) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);
  hub_.Closed(&b);
  EXPECT_EQ(hub_.counters().sessions.load(), 1);
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().unknown_destination.load(), 1u);
  // Events for a forgotten connection are ignored.
  hub_.Received(&b, SendFrame(alice.public_key, Wg({1})));
  hub_.AuthDeadline(&b);
  EXPECT_EQ(a.LastType(), relay::FrameType::kReady);
}

TEST_F(RelayHubTest, RevokedKeyIsClosedAndUnrouted) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);
  hub_.Revoke(bob.public_key);
  EXPECT_EQ(LastErrorCode(b), relay::ErrorCode::kNotMember);
  EXPECT_EQ(b.close_calls, 1);
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().unknown_destination.load(), 1u);
  // What the closing connection still sends is ignored; its close is handled once.
  hub_.Received(&b, SendFrame(alice.public_key, Wg({1})));
  EXPECT_EQ(a.LastType(), relay::FrameType::kReady);
  hub_.Closed(&b);
  EXPECT_EQ(hub_.counters().sessions.load(), 1);
  hub_.Revoke(alice.public_key);
  hub_.Revoke(alice.public_key);
  EXPECT_EQ(a.close_calls, 1);
}

// A member that moves to another mesh keeps its connection, but from Rescope on it is scoped to
// the new mesh: its old mesh neither reaches it nor is reached by it; the new one both.
TEST_F(RelayHubTest, RescopeMovesASessionToItsNewMesh) {
  Member alice, bob, carol;
  members_ = {alice.public_key, bob.public_key};  // "demo"
  other_mesh_[carol.public_key] = "lab";
  FakeConnection a, b, c;
  Authenticate(a, alice);
  Authenticate(b, bob);
  Authenticate(c, carol);
  // Bob moves from "demo" to "lab".
  members_.erase(bob.public_key);
  other_mesh_[bob.public_key] = "lab";
  hub_.Rescope(bob.public_key);
  EXPECT_EQ(hub_.counters().rescoped.load(), 1u);
  EXPECT_EQ(b.close_calls, 0);
  const size_t a_frames = a.frames.size(), b_frames = b.frames.size();
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));    // old mesh -> bob
  hub_.Received(&b, SendFrame(alice.public_key, Wg({2})));  // bob -> old mesh
  EXPECT_EQ(hub_.counters().cross_mesh.load(), 2u);
  EXPECT_EQ(a.frames.size(), a_frames);
  hub_.Received(&c, SendFrame(bob.public_key, Wg({3})));    // new mesh -> bob
  hub_.Received(&b, SendFrame(carol.public_key, Wg({4})));  // bob -> new mesh
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(b.frames.size(), b_frames + 1);
  EXPECT_EQ(c.LastType(), relay::FrameType::kDeliver);
  // Unchanged: nothing happens. No longer a member anywhere: closed as by Revoke.
  hub_.Rescope(bob.public_key);
  EXPECT_EQ(hub_.counters().rescoped.load(), 1u);
  other_mesh_.erase(bob.public_key);
  hub_.Rescope(bob.public_key);
  EXPECT_EQ(LastErrorCode(b), relay::ErrorCode::kNotMember);
  EXPECT_EQ(b.close_calls, 1);
  // A key without a session: nothing to do.
  hub_.Rescope(Member().public_key);
}

TEST_F(RelayHubTest, FullDestinationQueueDropsAndCounts) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a;
  FakeConnection b(/*capacity=*/2);
  Authenticate(a, alice);
  Authenticate(b, bob);
  for (int i = 0; i < 5; ++i) hub_.Received(&a, SendFrame(bob.public_key, Wg({1, 2})));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(hub_.counters().bytes_relayed.load(), 64u);
  EXPECT_EQ(hub_.counters().queue_overflow.load(), 3u);
  EXPECT_EQ(b.close_calls, 0);
}

TEST_F(RelayHubTest, FullRelayBudgetDropsAndCountsApart) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);
  b.over_budget = true;
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().budget_overflow.load(), 1u);
  EXPECT_EQ(hub_.counters().queue_overflow.load(), 0u);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 0u);
  b.over_budget = false;
  hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 1u);
}

TEST_F(RelayHubTest, SendIsDeliveredOnlyWithinTheSendersMesh) {
  Member alice, bob, eve;
  members_ = {alice.public_key, bob.public_key};
  other_mesh_[eve.public_key] = "other";
  FakeConnection a, b, e;
  Authenticate(a, alice);
  Authenticate(b, bob);
  Authenticate(e, eve);  // a member, of another mesh: it gets a session
  EXPECT_EQ(hub_.counters().sessions.load(), 3);

  hub_.Received(&e, SendFrame(alice.public_key, Wg({6})));
  hub_.Received(&a, SendFrame(eve.public_key, Wg({6})));
  EXPECT_EQ(hub_.counters().cross_mesh.load(), 2u);
  EXPECT_EQ(a.LastType(), relay::FrameType::kReady);
  EXPECT_EQ(e.LastType(), relay::FrameType::kReady);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 0u);

  // Within a mesh, as before.
  hub_.Received(&a, SendFrame(bob.public_key, Wg({6})));
  EXPECT_EQ(b.LastType(), relay::FrameType::kDeliver);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 1u);
}

TEST_F(RelayHubTest, OnlyWireGuardAndDiscoveryPayloadsAreRelayed) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);

  std::vector<uint8_t> initiation(148, 0xaa);
  initiation[0] = 1;
  initiation[1] = initiation[2] = initiation[3] = 0;
  std::vector<uint8_t> response(92, 0);
  response[0] = 2;
  std::vector<uint8_t> cookie(64, 0);
  cookie[0] = 3;
  std::vector<uint8_t> disco(disco::kMinDatagramSize, 0x11);
  std::copy(disco::kMagic.begin(), disco::kMagic.end(), disco.begin());
  for (const std::vector<uint8_t>& good : {initiation, response, cookie, Wg({}), disco}) {
    hub_.Received(&a, SendFrame(bob.public_key, good));
  }
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 5u);
  EXPECT_EQ(hub_.counters().bad_payload.load(), 0u);

  std::vector<uint8_t> text = {'c', 'r', 'o', 's', 's', '-', 'm', 'e', 's', 'h'};
  std::vector<uint8_t> short_initiation(initiation.begin(), initiation.end() - 1);
  std::vector<uint8_t> reserved_set = Wg({});
  reserved_set[2] = 1;
  std::vector<uint8_t> short_transport(31, 0);
  short_transport[0] = 4;
  std::vector<uint8_t> short_disco(disco.begin(), disco.end() - 1);
  std::vector<uint8_t> long_disco(disco::kMaxDatagramSize + 1, 0x11);
  std::copy(disco::kMagic.begin(), disco::kMagic.end(), long_disco.begin());
  for (const std::vector<uint8_t>& bad :
       {text, short_initiation, reserved_set, short_transport, short_disco, long_disco,
        std::vector<uint8_t>{5, 0, 0, 0, 1, 2, 3, 4}}) {
    hub_.Received(&a, SendFrame(bob.public_key, bad));
  }
  EXPECT_EQ(hub_.counters().bad_payload.load(), 7u);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 5u);
  EXPECT_EQ(a.close_calls + b.close_calls, 0);
}

class RelayHubRateTest : public RelayHubTest {
 protected:
  static RelayHub::Limits Small() {
    RelayHub::Limits limits;
    limits.frames_per_second = 10;
    limits.bytes_per_second = 1e9;
    limits.burst = std::chrono::seconds(1);
    return limits;
  }
  RelayHubRateTest() : RelayHubTest(Small()) {}
};

TEST_F(RelayHubRateTest, FramesOverTheSessionRateAreDroppedAndCounted) {
  Member alice, bob, carol;
  members_ = {alice.public_key, bob.public_key, carol.public_key};
  FakeConnection a, b, c;
  Authenticate(a, alice);
  Authenticate(b, bob);
  Authenticate(c, carol);
  // A burst of 10 passes, the rest of 25 is dropped.
  for (int i = 0; i < 25; ++i) hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 10u);
  EXPECT_EQ(hub_.counters().rate_limited.load(), 15u);
  // Another session has its own bucket.
  hub_.Received(&c, SendFrame(bob.public_key, Wg({2})));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 11u);
  // Half a second refills five.
  clock_.Advance(std::chrono::milliseconds(500));
  for (int i = 0; i < 8; ++i) hub_.Received(&a, SendFrame(bob.public_key, Wg({1})));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 16u);
  EXPECT_EQ(hub_.counters().rate_limited.load(), 18u);
  EXPECT_EQ(a.close_calls, 0);
}

class RelayHubByteRateTest : public RelayHubTest {
 protected:
  static RelayHub::Limits Small() {
    RelayHub::Limits limits;
    limits.frames_per_second = 1e6;
    limits.bytes_per_second = 100000;  // the bucket holds at least one largest payload
    limits.burst = std::chrono::seconds(1);
    return limits;
  }
  RelayHubByteRateTest() : RelayHubTest(Small()) {}
};

TEST_F(RelayHubByteRateTest, BytesOverTheSessionRateAreDroppedAndCounted) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a, b;
  Authenticate(a, alice);
  Authenticate(b, bob);
  std::vector<uint8_t> big = Wg({});
  big.resize(40000, 7);
  for (int i = 0; i < 4; ++i) hub_.Received(&a, SendFrame(bob.public_key, big));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(hub_.counters().rate_limited.load(), 2u);
  clock_.Advance(std::chrono::seconds(1));
  hub_.Received(&a, SendFrame(bob.public_key, big));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 3u);
}

}  // namespace
}  // namespace tunnelmesh
