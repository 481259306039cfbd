// RelayBind: the id <-> key table in both directions, the bounded ring (overflow counted, slots
// valid until the next Receive), bursts, and the eventfd that announces queued frames.
#include "node-agent/transport/relay_bind.h"

#include <poll.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

PublicKey Key(uint8_t fill) {
  PublicKey k;
  k.bytes.fill(fill);
  return k;
}

bool Readable(const Bind& bind) {
  pollfd p{bind.readable_fd(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(RelayBindTest, SendsToTheKeyOfThePeerIdAndRefusesUnknownIds) {
  std::vector<std::pair<PublicKey, std::string>> frames;
  bool relay_up = true;
  RelayBind bind([&](const PublicKey& key, absl::Span<const uint8_t> payload) {
    if (!relay_up) return false;
    frames.emplace_back(key, std::string(payload.begin(), payload.end()));
    return true;
  });
  EXPECT_EQ(bind.transport(), Transport::kRelay);
  EXPECT_EQ(bind.port(), 0);
  bind.SetPeer(7, Key(0xaa));
  const std::string hello = "hello";
  std::vector<OutgoingDatagram> out = {
      {reinterpret_cast<const uint8_t*>(hello.data()), hello.size(), TransportEndpoint::Relay(7)},
      {reinterpret_cast<const uint8_t*>(hello.data()), hello.size(), TransportEndpoint::Relay(8)},
      {reinterpret_cast<const uint8_t*>(hello.data()), hello.size(),
       Endpoint(*IpAddress::Parse("192.0.2.1"), 1)},
  };
  EXPECT_EQ(bind.Send(out), 2u) << "unknown id and UDP endpoint refused";
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].first, Key(0xaa));
  EXPECT_EQ(frames[0].second, "hello");
  relay_up = false;
  EXPECT_EQ(bind.Send(absl::MakeSpan(out).first(1)), 1u) << "the relay's refusal is passed on";
  // Re-keying an id replaces the old mapping both ways.
  bind.SetPeer(7, Key(0xbb));
  bind.Deliver(Key(0xaa), Bytes("stale"));
  EXPECT_EQ(bind.unknown_sources(), 1u);
  bind.RemovePeer(7);
  relay_up = true;
  EXPECT_EQ(bind.Send(absl::MakeSpan(out).first(1)), 1u);
}

TEST(RelayBindTest, QueuesDeliveredFramesBoundedAndHandsThemOverInBursts) {
  RelayBind bind([](const PublicKey&, absl::Span<const uint8_t>) { return true; },
                 RelayBind::Options{.queue_slots = 8, .slot_size = 64, .burst = 3});
  bind.SetPeer(1, Key(1));
  bind.SetPeer(2, Key(2));
  EXPECT_FALSE(Readable(bind));
  bind.Deliver(Key(9), Bytes("who?"));
  EXPECT_FALSE(Readable(bind)) << "frames from non-peers are not queued";
  for (int i = 0; i < 10; ++i) bind.Deliver(Key(i % 2 ? 2 : 1), Bytes("frame" + std::to_string(i)));
  bind.Deliver(Key(1), Bytes(std::string(65, 'x')));
  EXPECT_EQ(bind.receive_dropped(), 3u) << "two beyond the 8 slots, one larger than a slot";
  std::vector<std::pair<uint32_t, std::string>> got;
  std::vector<absl::Span<uint8_t>> previous;
  while (Readable(bind)) {
    // The previous burst's bytes are still intact while the next one is taken.
    for (absl::Span<uint8_t> p : previous)
      EXPECT_EQ(std::string(p.begin(), p.begin() + 5), "frame");
    previous.clear();
    absl::StatusOr<size_t> n = bind.Receive([&](absl::Span<uint8_t> b, const TransportEndpoint& f) {
      ASSERT_TRUE(f.is_relay());
      got.emplace_back(f.relay_peer_id(), std::string(b.begin(), b.end()));
      previous.push_back(b);
    });
    ASSERT_TRUE(n.ok());
    EXPECT_LE(*n, 3u);
  }
  ASSERT_EQ(got.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(got[i].first, i % 2 ? 2u : 1u);
    EXPECT_EQ(got[i].second, "frame" + std::to_string(i));
  }
  // The ring wraps: more frames fit again once the last burst is released.
  bind.Deliver(Key(2), Bytes("after"));
  ASSERT_TRUE(Readable(bind));
  got.clear();
  ASSERT_TRUE(bind.Receive([&](absl::Span<uint8_t> b, const TransportEndpoint& f) {
                    got.emplace_back(f.relay_peer_id(), std::string(b.begin(), b.end()));
                  })
                  .ok());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], std::make_pair(2u, std::string("after")));
}

TEST(RelayBindTest, CarriesSshEndpointsOverTheSshSender) {
  std::vector<std::string> relayed, over_ssh;
  RelayBind bind(
      [&](const PublicKey&, absl::Span<const uint8_t> payload) {
        relayed.emplace_back(payload.begin(), payload.end());
        return true;
      },
      RelayBind::Options(),
      [&](const PublicKey& key, absl::Span<const uint8_t> payload) {
        EXPECT_EQ(key, Key(0xaa));
        over_ssh.emplace_back(payload.begin(), payload.end());
        return true;
      });
  bind.SetPeer(7, Key(0xaa));
  const std::string a = "via-ssh", b = "via-relay";
  std::vector<OutgoingDatagram> out = {
      {reinterpret_cast<const uint8_t*>(a.data()), a.size(), TransportEndpoint::Ssh(7)},
      {reinterpret_cast<const uint8_t*>(b.data()), b.size(), TransportEndpoint::Relay(7)},
  };
  EXPECT_EQ(bind.Send(out), 0u);
  EXPECT_EQ(over_ssh, std::vector<std::string>{"via-ssh"});
  EXPECT_EQ(relayed, std::vector<std::string>{"via-relay"});

  // Received frames come back named by their transport, so the device answers the same way.
  bind.Deliver(Key(0xaa), Bytes("in-ssh"), Transport::kSsh);
  bind.Deliver(Key(0xaa), Bytes("in-relay"));
  std::vector<TransportEndpoint> from;
  ASSERT_TRUE(
      bind.Receive([&](absl::Span<uint8_t>, const TransportEndpoint& e) { from.push_back(e); })
          .ok());
  EXPECT_EQ(from, (std::vector<TransportEndpoint>{TransportEndpoint::Ssh(7),
                                                  TransportEndpoint::Relay(7)}));
  EXPECT_EQ(TransportEndpoint::Ssh(7).ToString(), "ssh");
  EXPECT_FALSE(TransportEndpoint::Ssh(7) == TransportEndpoint::Relay(7));

  // Without an SSH sender, SSH endpoints are refused.
  RelayBind relay_only([](const PublicKey&, absl::Span<const uint8_t>) { return true; });
  relay_only.SetPeer(7, Key(0xaa));
  EXPECT_EQ(relay_only.Send(absl::MakeSpan(out).first(1)), 1u);
}

}  // namespace
}  // namespace tunnelmesh
