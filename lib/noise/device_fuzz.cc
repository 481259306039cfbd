// Fuzz target: arbitrary datagrams into a Device that has one peer and a live session. Nothing may
// crash or read out of bounds, and the session must still work after every input.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "lib/noise/device.h"

using namespace tunnelmesh;
using namespace tunnelmesh::noise;

namespace {

struct World {
  World() {
    InitCrypto();
    a_key = SecretKey::GeneratePrivate();
    b_key = SecretKey::GeneratePrivate();
    a = std::make_unique<Device>(a_key, 1420);
    b = std::make_unique<Device>(b_key, 1420);
    a_ep = Endpoint(*IpAddress::Parse("192.0.2.1"), 1);
    b_ep = Endpoint(*IpAddress::Parse("192.0.2.2"), 2);
    peer_a = *a->AddPeer({b->identity().public_key, SecretKey(), b_ep, std::chrono::seconds(0)});
    b->AddPeer({a->identity().public_key, SecretKey(), std::nullopt, std::chrono::seconds(0)})
        .IgnoreError();
    // Handshake through a tiny in-memory network.
    std::vector<std::pair<bool, std::vector<uint8_t>>> q;  // (to_b, bytes)
    auto from_a = [&](const TransportEndpoint&, absl::Span<const uint8_t> m) {
      q.push_back({true, {m.begin(), m.end()}});
    };
    a->Initiate(peer_a, now, absl::Now(), from_a);
    for (size_t i = 0; i < q.size(); ++i) {
      auto [to_b, bytes] = q[i];
      auto emit = [&, to_b = to_b](const TransportEndpoint&, absl::Span<const uint8_t> m) {
        q.push_back({!to_b, {m.begin(), m.end()}});
      };
      (to_b ? b : a)
          ->Receive(absl::Span<uint8_t>(bytes), to_b ? a_ep : b_ep, now, absl::Now(), emit);
    }
  }
  SecretKey a_key, b_key;
  std::unique_ptr<Device> a, b;
  Endpoint a_ep, b_ep;
  Peer* peer_a;
  MonoTime now = MonoTime(std::chrono::hours(1));
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  std::vector<uint8_t> datagram(data, data + size);
  auto ignore = [](const TransportEndpoint&, absl::Span<const uint8_t>) {};
  world.b->Receive(absl::Span<uint8_t>(datagram), world.a_ep, world.now, absl::Now(), ignore);
  return 0;
}
