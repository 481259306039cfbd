#include "node-agent/tun/testing/fake_tun_device.h"

#include <poll.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using ::testing::ElementsAre;

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

TEST(FakeTunDeviceTest, InjectedPacketsAreReadInOrderAndDrivePoll) {
  FakeTunDevice tun("tm-test");
  EXPECT_EQ(tun.name(), "tm-test");
  EXPECT_FALSE(Readable(tun.fd()));

  tun.InjectPacket(std::vector<uint8_t>{0x45, 1, 2});
  tun.InjectPacket(std::vector<uint8_t>{0x60, 3});
  EXPECT_TRUE(Readable(tun.fd()));
  EXPECT_EQ(tun.pending_reads(), 2u);

  uint8_t buffer[64];
  absl::StatusOr<size_t> n = tun.Read(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok());
  EXPECT_THAT(std::vector<uint8_t>(buffer, buffer + *n), ElementsAre(0x45, 1, 2));
  EXPECT_TRUE(Readable(tun.fd()));
  n = tun.Read(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok());
  EXPECT_THAT(std::vector<uint8_t>(buffer, buffer + *n), ElementsAre(0x60, 3));
  EXPECT_FALSE(Readable(tun.fd()));

  // Empty: 0, like a non-blocking TUN descriptor with nothing to read.
  n = tun.Read(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(tun.read_count(), 2u);
}

TEST(FakeTunDeviceTest, ReadTruncatesLikeTheKernel) {
  FakeTunDevice tun;
  tun.InjectPacket(std::vector<uint8_t>{1, 2, 3, 4, 5});
  uint8_t buffer[3];
  absl::StatusOr<size_t> n = tun.Read(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  EXPECT_THAT(buffer, ElementsAre(1, 2, 3));
}

TEST(FakeTunDeviceTest, WrittenPacketsAreRecorded) {
  FakeTunDevice tun;
  ASSERT_TRUE(tun.Write(std::vector<uint8_t>{1}).ok());
  ASSERT_TRUE(tun.Write(std::vector<uint8_t>{2, 2}).ok());
  ASSERT_TRUE(tun.Write(std::vector<uint8_t>{3}).ok());
  EXPECT_EQ(tun.write_count(), 3u);
  EXPECT_THAT(tun.PopWrittenPacket(), testing::Optional(ElementsAre(1)));
  EXPECT_THAT(tun.TakeWrittenPackets(), ElementsAre(ElementsAre(2, 2), ElementsAre(3)));
  EXPECT_EQ(tun.PopWrittenPacket(), std::nullopt);
}

TEST(FakeTunDeviceTest, InjectedErrors) {
  FakeTunDevice tun;
  tun.SetWriteStatus(absl::UnavailableError("link down"));
  EXPECT_EQ(tun.Write(std::vector<uint8_t>{1}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(tun.write_count(), 0u);
  tun.SetWriteStatus(absl::OkStatus());
  EXPECT_TRUE(tun.Write(std::vector<uint8_t>{1}).ok());

  tun.InjectPacket(std::vector<uint8_t>{9});
  tun.SetReadStatus(absl::UnavailableError("gone"));
  uint8_t buffer[4];
  EXPECT_EQ(tun.Read(absl::MakeSpan(buffer)).status().code(), absl::StatusCode::kUnavailable);
  tun.SetReadStatus(absl::OkStatus());
  EXPECT_EQ(tun.Read(absl::MakeSpan(buffer)).value(), 1u);
}

TEST(FakeTunDeviceTest, PollingReaderOnAnotherThreadSeesEveryPacket) {
  FakeTunDevice tun;
  constexpr int kPackets = 1000;
  std::thread reader([&] {
    uint8_t buffer[8];
    int seen = 0;
    while (seen < kPackets) {
      pollfd p{tun.fd(), POLLIN, 0};
      ASSERT_GE(poll(&p, 1, 5000), 1);
      absl::StatusOr<size_t> n = tun.Read(absl::MakeSpan(buffer));
      ASSERT_TRUE(n.ok());
      if (*n == 0) continue;
      ASSERT_EQ(buffer[0], static_cast<uint8_t>(seen));
      ++seen;
    }
  });
  for (int i = 0; i < kPackets; ++i)
    tun.InjectPacket(std::vector<uint8_t>{static_cast<uint8_t>(i)});
  reader.join();
  EXPECT_EQ(tun.pending_reads(), 0u);
}

}  // namespace
}  // namespace tunnelmesh
