// UdpBind over loopback: a burst sent in one Send arrives as the same datagrams in order (through
// GSO and GRO where the kernel has them), relay endpoints are refused, single sends work.
#include "node-agent/transport/udp_bind.h"

#include <poll.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

std::vector<std::vector<uint8_t>> ReceiveAll(UdpBind& bind, size_t expected,
                                             std::vector<TransportEndpoint>* sources) {
  std::vector<std::vector<uint8_t>> out;
  for (int attempt = 0; attempt < 100 && out.size() < expected; ++attempt) {
    pollfd p{bind.readable_fd(), POLLIN, 0};
    poll(&p, 1, 50);
    absl::StatusOr<size_t> n =
        bind.Receive([&](absl::Span<uint8_t> bytes, const TransportEndpoint& from) {
          out.emplace_back(bytes.begin(), bytes.end());
          sources->push_back(from);
        });
    EXPECT_TRUE(n.ok());
  }
  return out;
}

TEST(UdpBindTest, BurstArrivesInOrderAndRelayEndpointsAreRefused) {
  absl::StatusOr<std::unique_ptr<UdpBind>> a = UdpBind::Open(0, false);
  absl::StatusOr<std::unique_ptr<UdpBind>> b = UdpBind::Open(0, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->transport(), Transport::kUdp);
  const Endpoint to(*IpAddress::Parse("127.0.0.1"), (*b)->port());
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 40; ++i) sent.emplace_back(i == 39 ? 200 : 1000, static_cast<uint8_t>(i));
  std::vector<OutgoingDatagram> burst;
  for (const auto& s : sent) burst.push_back({s.data(), s.size(), to});
  burst.insert(burst.begin() + 5,
               OutgoingDatagram{sent[0].data(), 10, TransportEndpoint::Relay(1)});
  EXPECT_EQ((*a)->Send(burst), 1u) << "only the relay endpoint is refused";

  std::vector<TransportEndpoint> sources;
  auto got = ReceiveAll(**b, sent.size(), &sources);
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i]) << "datagram " << i;
  ASSERT_TRUE(sources[0].is_udp());
  EXPECT_EQ(sources[0].udp().port(), (*a)->port());

  // A single datagram takes the direct path.
  const OutgoingDatagram one{sent[1].data(), sent[1].size(),
                             Endpoint(*IpAddress::Parse("::1"), (*a)->port())};
  EXPECT_EQ((*b)->Send(absl::Span<const OutgoingDatagram>(&one, 1)), 0u);
  sources.clear();
  auto back = ReceiveAll(**a, 1, &sources);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0], sent[1]);
}

}  // namespace
}  // namespace tunnelmesh
