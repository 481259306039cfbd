// RelayHub with fake connections: authentication, routing, newest-wins and every drop counter.
#include "operator/relay/relay_hub.h"

#include <sodium.h>

#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

namespace relay = wire::relay;

class FakeConnection : public RelayConnection {
 public:
  explicit FakeConnection(size_t capacity = 1000) : capacity_(capacity) {}

  bool Send(std::vector<uint8_t> frame, bool droppable) override {
    if (droppable && data_frames_ >= capacity_) return false;
    if (droppable) ++data_frames_;
    frames.push_back(std::move(frame));
    return true;
  }
  void Close() override { ++close_calls; }

  relay::Bytes Last() const { return relay::Bytes(frames.back().data(), frames.back().size()); }
  std::optional<relay::FrameType> LastType() const {
    return frames.empty() ? std::nullopt : relay::Classify(Last());
  }

  std::vector<std::vector<uint8_t>> frames;
  int close_calls = 0;

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

  RelayHubTest()
      : hub_(
            server_key_, [this](const PublicKey& key) { return members_.count(key) > 0; },
            [this](uint8_t* out, size_t size) {
              for (size_t i = 0; i < size; ++i) out[i] = static_cast<uint8_t>(counter_++);
            }) {}

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
  std::set<PublicKey> members_;
  uint8_t counter_ = 0;
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

  hub_.Received(&a, SendFrame(bob.public_key, {1, 2, 3, 4}));
  ASSERT_EQ(b.LastType(), relay::FrameType::kDeliver);
  relay::Deliver deliver;
  ASSERT_TRUE(relay::Parse(b.Last(), &deliver));
  EXPECT_EQ(PublicKey{deliver.source}, alice.public_key);
  EXPECT_EQ(std::vector<uint8_t>(deliver.payload.begin(), deliver.payload.end()),
            (std::vector<uint8_t>{1, 2, 3, 4}));

  hub_.Received(&b, SendFrame(alice.public_key, {9}));
  ASSERT_EQ(a.LastType(), relay::FrameType::kDeliver);
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(hub_.counters().bytes_relayed.load(), 5u);
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
  hub_.Received(&c, SendFrame(stranger.public_key, {1}));
  EXPECT_EQ(hub_.counters().malformed.load(), 0u);
  EXPECT_EQ(c.close_calls, 1);
}

TEST_F(RelayHubTest, AnythingButHelloFirstFailsAuth) {
  Member alice;
  members_ = {alice.public_key};
  FakeConnection c1, c2, c3;
  hub_.Opened(&c1);
  hub_.Received(&c1, SendFrame(alice.public_key, {1}));
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
  hub_.Received(&a, SendFrame(bob.public_key, {1}));  // Bob is not connected
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
  hub_.Received(&old_a, SendFrame(bob.public_key, {1}));
  EXPECT_EQ(b.LastType(), relay::FrameType::kReady);

  // Its late close does not unroute the new one.
  hub_.Closed(&old_a);
  hub_.Received(&b, SendFrame(alice.public_key, {7, 7}));
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
  hub_.Received(&a, SendFrame(bob.public_key, {1}));
  EXPECT_EQ(hub_.counters().unknown_destination.load(), 1u);
  // Events for a forgotten connection are ignored.
  hub_.Received(&b, SendFrame(alice.public_key, {1}));
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
  hub_.Received(&a, SendFrame(bob.public_key, {1}));
  EXPECT_EQ(hub_.counters().unknown_destination.load(), 1u);
  // What the closing connection still sends is ignored; its close is handled once.
  hub_.Received(&b, SendFrame(alice.public_key, {1}));
  EXPECT_EQ(a.LastType(), relay::FrameType::kReady);
  hub_.Closed(&b);
  EXPECT_EQ(hub_.counters().sessions.load(), 1);
  hub_.Revoke(alice.public_key);
  hub_.Revoke(alice.public_key);
  EXPECT_EQ(a.close_calls, 1);
}

TEST_F(RelayHubTest, FullDestinationQueueDropsAndCounts) {
  Member alice, bob;
  members_ = {alice.public_key, bob.public_key};
  FakeConnection a;
  FakeConnection b(/*capacity=*/2);
  Authenticate(a, alice);
  Authenticate(b, bob);
  for (int i = 0; i < 5; ++i) hub_.Received(&a, SendFrame(bob.public_key, {1, 2}));
  EXPECT_EQ(hub_.counters().frames_relayed.load(), 2u);
  EXPECT_EQ(hub_.counters().bytes_relayed.load(), 4u);
  EXPECT_EQ(hub_.counters().queue_overflow.load(), 3u);
  EXPECT_EQ(b.close_calls, 0);
}

}  // namespace
}  // namespace tunnelmesh
