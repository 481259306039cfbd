#include "lib/base/byte_io.h"

#include <array>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

TEST(ByteReaderTest, ReadsEachWidthInItsByteOrder) {
  const std::vector<uint8_t> bytes = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                                      0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13};
  ByteReader reader(bytes);
  uint8_t u8 = 0;
  uint16_t be16 = 0;
  uint32_t be32 = 0, le32 = 0;
  uint64_t le64 = 0;
  ASSERT_TRUE(reader.ReadU8(&u8));
  ASSERT_TRUE(reader.ReadBe16(&be16));
  ASSERT_TRUE(reader.ReadBe32(&be32));
  ASSERT_TRUE(reader.ReadLe32(&le32));
  ASSERT_TRUE(reader.ReadLe64(&le64));
  EXPECT_EQ(u8, 0x01);
  EXPECT_EQ(be16, 0x0203);
  EXPECT_EQ(be32, 0x04050607u);
  EXPECT_EQ(le32, 0x0b0a0908u);
  EXPECT_EQ(le64, 0x131211100f0e0d0cull);
  EXPECT_EQ(reader.remaining(), 0u);
  EXPECT_TRUE(reader.ok());
}

TEST(ByteReaderTest, ReadPastTheEndFailsAndEveryLaterReadFailsToo) {
  const std::vector<uint8_t> bytes = {0xaa, 0xbb, 0xcc};
  ByteReader reader(bytes);
  uint32_t value = 7;
  EXPECT_FALSE(reader.ReadBe32(&value));
  EXPECT_EQ(value, 7u) << "a failed read must not write its output";
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.remaining(), 0u);
  // The three bytes are still there, but a reader that failed once stays failed, so a parser that
  // checks ok() only at the end cannot accept a truncated message.
  uint8_t byte = 0;
  EXPECT_FALSE(reader.ReadU8(&byte));
  EXPECT_FALSE(reader.Skip(0));
}

TEST(ByteReaderTest, SkipAndReadBytesStayInsideTheBuffer) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5, 6};
  ByteReader reader(bytes);
  ASSERT_TRUE(reader.Skip(2));
  absl::Span<const uint8_t> view;
  ASSERT_TRUE(reader.ReadBytes(3, &view));
  EXPECT_EQ(view.data(), bytes.data() + 2) << "ReadBytes returns a view, not a copy";
  EXPECT_EQ(std::vector<uint8_t>(view.begin(), view.end()), (std::vector<uint8_t>{3, 4, 5}));
  EXPECT_EQ(reader.remaining(), 1u);
  EXPECT_FALSE(reader.ReadBytes(2, &view));
  EXPECT_FALSE(reader.ok());
}

TEST(ByteReaderTest, HugeLengthsDoNotWrapAround) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4};
  ByteReader reader(bytes);
  ASSERT_TRUE(reader.Skip(1));
  EXPECT_FALSE(reader.Skip(SIZE_MAX));
  ByteReader other(bytes);
  absl::Span<const uint8_t> view;
  ASSERT_TRUE(other.Skip(3));
  EXPECT_FALSE(other.ReadBytes(SIZE_MAX - 1, &view));
}

TEST(ByteReaderTest, ReadArrayCopiesExactlyN) {
  const std::vector<uint8_t> bytes = {9, 8, 7, 6, 5};
  ByteReader reader(bytes);
  std::array<uint8_t, 4> out{};
  ASSERT_TRUE(reader.ReadArray(&out));
  EXPECT_EQ(out, (std::array<uint8_t, 4>{9, 8, 7, 6}));
  EXPECT_FALSE(reader.ReadArray(&out));
}

TEST(ByteWriterTest, WritesWhatByteReaderReads) {
  std::array<uint8_t, 1 + 2 + 4 + 4 + 8 + 3> buffer{};
  ByteWriter writer(buffer.data());
  writer.U8(0xfe);
  writer.Be16(0x1234);
  writer.Be32(0xdeadbeef);
  writer.Le32(0x01020304);
  writer.Le64(0x1122334455667788ull);
  writer.Array(std::array<uint8_t, 3>{7, 8, 9});
  EXPECT_EQ(writer.size(), buffer.size());
  EXPECT_EQ(buffer[1], 0x12) << "Be16 writes the high byte first";
  EXPECT_EQ(buffer[7], 0x04) << "Le32 writes the low byte first";

  ByteReader reader(buffer);
  uint8_t u8 = 0;
  uint16_t be16 = 0;
  uint32_t be32 = 0, le32 = 0;
  uint64_t le64 = 0;
  std::array<uint8_t, 3> tail{};
  ASSERT_TRUE(reader.ReadU8(&u8) && reader.ReadBe16(&be16) && reader.ReadBe32(&be32) &&
              reader.ReadLe32(&le32) && reader.ReadLe64(&le64) && reader.ReadArray(&tail));
  EXPECT_EQ(u8, 0xfe);
  EXPECT_EQ(be16, 0x1234);
  EXPECT_EQ(be32, 0xdeadbeefu);
  EXPECT_EQ(le32, 0x01020304u);
  EXPECT_EQ(le64, 0x1122334455667788ull);
  EXPECT_EQ(tail, (std::array<uint8_t, 3>{7, 8, 9}));
}

}  // namespace
}  // namespace tunnelmesh
