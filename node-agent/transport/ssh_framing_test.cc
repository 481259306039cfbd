#include "node-agent/transport/ssh_framing.h"

#include <gtest/gtest.h>

#include <vector>

namespace tunnelmesh {
namespace {

using Frames = std::vector<std::vector<uint8_t>>;

TEST(SshFraming, RoundTripsWholeAndByteByByte) {
  std::vector<uint8_t> stream;
  const std::vector<uint8_t> a = {1, 2, 3};
  const std::vector<uint8_t> b(1500, 0xab);
  ASSERT_TRUE(AppendSshFrame(a, &stream));
  ASSERT_TRUE(AppendSshFrame(b, &stream));
  EXPECT_EQ(stream.size(), 2 + 3 + 2 + 1500u);
  EXPECT_EQ(stream[0], 0);
  EXPECT_EQ(stream[1], 3);

  Frames whole;
  SshFrameReader r1(kSshMaxFrame);
  ASSERT_TRUE(r1.Feed(
      stream, [&](absl::Span<const uint8_t> f) { whole.emplace_back(f.begin(), f.end()); }));
  EXPECT_EQ(whole, (Frames{a, b}));

  Frames bytewise;
  SshFrameReader r2(kSshMaxFrame);
  for (uint8_t byte : stream) {
    ASSERT_TRUE(r2.Feed(absl::Span<const uint8_t>(&byte, 1), [&](absl::Span<const uint8_t> f) {
      bytewise.emplace_back(f.begin(), f.end());
    }));
  }
  EXPECT_EQ(bytewise, whole);
}

TEST(SshFraming, RefusesEmptyAndOversizedFrames) {
  std::vector<uint8_t> out;
  EXPECT_FALSE(AppendSshFrame({}, &out));
  EXPECT_FALSE(AppendSshFrame(std::vector<uint8_t>(kSshMaxFrame + 1), &out));
  EXPECT_TRUE(out.empty());

  int frames = 0;
  auto count = [&](absl::Span<const uint8_t>) { ++frames; };
  SshFrameReader zero(100);
  EXPECT_FALSE(zero.Feed(std::vector<uint8_t>{0, 0, 1, 2}, count));
  // Broken for good: later valid frames are not handed over.
  EXPECT_FALSE(zero.Feed(std::vector<uint8_t>{0, 1, 7}, count));

  SshFrameReader small(100);
  EXPECT_FALSE(small.Feed(std::vector<uint8_t>{0, 101}, count));
  // The header split across calls is checked too.
  SshFrameReader split(100);
  EXPECT_TRUE(split.Feed(std::vector<uint8_t>{0}, count));
  EXPECT_FALSE(split.Feed(std::vector<uint8_t>{200}, count));
  EXPECT_EQ(frames, 0);
}

}  // namespace
}  // namespace tunnelmesh
