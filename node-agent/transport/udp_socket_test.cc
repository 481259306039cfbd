#include "node-agent/transport/udp_socket.h"

#include <poll.h>

#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

// Collects every datagram `socket` receives within a deadline, splitting GRO buffers at their
// segment size, until `expected` have arrived.
std::vector<std::vector<uint8_t>> ReceiveAll(UdpSocket& socket, size_t expected, bool* saw_gro) {
  RecvBatch batch(8, 65536);
  std::vector<std::vector<uint8_t>> out;
  for (int attempt = 0; attempt < 100 && out.size() < expected; ++attempt) {
    pollfd p{socket.fd(), POLLIN, 0};
    poll(&p, 1, 50);
    auto n = socket.Receive(&batch);
    EXPECT_TRUE(n.ok());
    for (size_t i = 0; i < *n; ++i) {
      size_t total = batch.length(i);
      size_t seg = batch.segment_size(i) ? batch.segment_size(i) : total;
      if (batch.segment_size(i) && total > seg) *saw_gro = true;
      for (size_t off = 0; off < total; off += seg) {
        size_t len = std::min(seg, total - off);
        out.emplace_back(batch.data(i) + off, batch.data(i) + off + len);
      }
    }
  }
  return out;
}

TEST(UdpSocketTest, CoalescedSendArrivesAsTheSameDatagramsInOrder) {
  auto a = UdpSocket::Open(0, false);
  auto b = UdpSocket::Open(0, false);
  ASSERT_TRUE(a.ok() && b.ok());
  Endpoint to(*IpAddress::Parse("127.0.0.1"), (*b)->port());
  std::vector<std::vector<uint8_t>> sent;
  SendBatch batch(64);
  for (int i = 0; i < 20; ++i) {
    sent.emplace_back(i == 19 ? 300 : 1200, static_cast<uint8_t>(i));
    batch.Add(sent.back().data(), sent.back().size(), to);
  }
  // A different destination in the middle of a run starts a new message.
  Endpoint other(*IpAddress::Parse("::1"), (*a)->port());
  std::vector<uint8_t> to_self(100, 0xee);
  batch.Add(to_self.data(), to_self.size(), other);
  EXPECT_EQ(batch.datagrams(), 21u);
  EXPECT_EQ((*a)->Send(&batch), 0u);

  bool gro = false;
  auto got = ReceiveAll(**b, 20, &gro);
  ASSERT_EQ(got.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[i], sent[i]) << "datagram " << i;
  bool unused = false;
  auto self = ReceiveAll(**a, 1, &unused);
  ASSERT_EQ(self.size(), 1u);
  EXPECT_EQ(self[0], to_self);
}

TEST(UdpSocketTest, BusyPortFallsBackOnlyWhenAllowed) {
  auto first = UdpSocket::Open(0, false);
  ASSERT_TRUE(first.ok());
  auto strict = UdpSocket::Open((*first)->port(), false);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(std::string(strict.status().message()).find(std::to_string((*first)->port())),
            std::string::npos);
  auto relaxed = UdpSocket::Open((*first)->port(), true);
  ASSERT_TRUE(relaxed.ok());
  EXPECT_NE((*relaxed)->port(), (*first)->port());
}

}  // namespace
}  // namespace tunnelmesh
