#include "lib/wire/relay_frame.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::wire::relay {
namespace {

Key FilledKey(uint8_t value) {
  Key key;
  key.fill(value);
  return key;
}

Bytes AsBytes(const std::vector<uint8_t>& v) { return Bytes(v.data(), v.size()); }

TEST(RelayFrameTest, ChallengeRoundTripsWithFieldsInOrder) {
  Challenge challenge;
  challenge.server_key = FilledKey(0x11);
  challenge.nonce.fill(0x22);
  challenge.random.fill(0x33);
  std::vector<uint8_t> buf;
  Serialize(challenge, &buf);
  ASSERT_EQ(buf.size(), kChallengeSize);
  EXPECT_EQ(buf.size(), 89u);
  EXPECT_EQ(buf[0], 1);
  EXPECT_EQ(buf[1], 0x11);
  EXPECT_EQ(buf[33], 0x22);
  EXPECT_EQ(buf[57], 0x33);
  EXPECT_EQ(Classify(AsBytes(buf)), FrameType::kChallenge);
  Challenge parsed;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.server_key, challenge.server_key);
  EXPECT_EQ(parsed.nonce, challenge.nonce);
  EXPECT_EQ(parsed.random, challenge.random);
}

TEST(RelayFrameTest, HelloRoundTrips) {
  Hello hello;
  hello.client_key = FilledKey(0x44);
  for (size_t i = 0; i < hello.proof.size(); ++i) hello.proof[i] = static_cast<uint8_t>(i);
  std::vector<uint8_t> buf;
  Serialize(hello, &buf);
  ASSERT_EQ(buf.size(), kHelloSize);
  EXPECT_EQ(buf[0], 2);
  Hello parsed;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.client_key, hello.client_key);
  EXPECT_EQ(parsed.proof, hello.proof);
}

TEST(RelayFrameTest, FixedFramesNeedTheirExactSize) {
  std::vector<uint8_t> buf;
  Serialize(Challenge{}, &buf);
  buf.push_back(0);
  Challenge challenge;
  EXPECT_FALSE(Parse(AsBytes(buf), &challenge));
  buf.resize(kChallengeSize - 1);
  EXPECT_FALSE(Parse(AsBytes(buf), &challenge));

  Serialize(Hello{}, &buf);
  buf.pop_back();
  Hello hello;
  EXPECT_FALSE(Parse(AsBytes(buf), &hello));

  SerializeReady(&buf);
  EXPECT_TRUE(ParseReady(AsBytes(buf)));
  buf.push_back(0);
  EXPECT_FALSE(ParseReady(AsBytes(buf)));
}

TEST(RelayFrameTest, SendCarriesPayloadToTheEnd) {
  const std::vector<uint8_t> payload = {4, 0, 0, 0, 9, 8, 7};
  std::vector<uint8_t> buf;
  ASSERT_TRUE(Serialize(Send{FilledKey(0x55), AsBytes(payload)}, &buf));
  ASSERT_EQ(buf.size(), kAddressedHeaderSize + payload.size());
  EXPECT_EQ(buf[0], 4);
  Send parsed;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.destination, FilledKey(0x55));
  EXPECT_EQ(std::vector<uint8_t>(parsed.payload.begin(), parsed.payload.end()), payload);
  // A Send is not a Deliver.
  Deliver deliver;
  EXPECT_FALSE(Parse(AsBytes(buf), &deliver));
}

TEST(RelayFrameTest, PayloadBounds) {
  std::vector<uint8_t> payload(kMaxPayloadSize, 0xab);
  std::vector<uint8_t> buf;
  ASSERT_TRUE(Serialize(Deliver{FilledKey(1), AsBytes(payload)}, &buf));
  EXPECT_EQ(buf.size(), kMaxFrameSize);
  Deliver parsed;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.payload.size(), kMaxPayloadSize);

  buf.push_back(0);  // one byte over the limit
  EXPECT_EQ(Classify(AsBytes(buf)), std::nullopt);
  EXPECT_FALSE(Parse(AsBytes(buf), &parsed));

  payload.push_back(0);
  EXPECT_FALSE(Serialize(Deliver{FilledKey(1), AsBytes(payload)}, &buf));
  EXPECT_TRUE(buf.empty());
  EXPECT_FALSE(Serialize(Send{FilledKey(1), Bytes()}, &buf));

  // A header without payload is not a frame.
  std::vector<uint8_t> header(kAddressedHeaderSize, 0);
  header[0] = static_cast<uint8_t>(FrameType::kSend);
  Send send;
  EXPECT_FALSE(Parse(AsBytes(header), &send));
}

TEST(RelayFrameTest, RewriteSendAsDeliverKeepsPayloadAndSetsSource) {
  const std::vector<uint8_t> payload = {1, 2, 3};
  std::vector<uint8_t> buf;
  ASSERT_TRUE(Serialize(Send{FilledKey(0xdd), AsBytes(payload)}, &buf));
  ASSERT_TRUE(RewriteSendAsDeliver(absl::MakeSpan(buf), FilledKey(0x5a)));
  Deliver deliver;
  ASSERT_TRUE(Parse(AsBytes(buf), &deliver));
  EXPECT_EQ(deliver.source, FilledKey(0x5a));
  EXPECT_EQ(std::vector<uint8_t>(deliver.payload.begin(), deliver.payload.end()), payload);

  // Not a Send any more: refused, untouched.
  std::vector<uint8_t> before = buf;
  EXPECT_FALSE(RewriteSendAsDeliver(absl::MakeSpan(buf), FilledKey(0)));
  EXPECT_EQ(buf, before);
}

TEST(RelayFrameTest, ErrorRoundTripsAndCutsLongText) {
  std::vector<uint8_t> buf;
  Serialize(Error{ErrorCode::kNotMember, "key is not a mesh member"}, &buf);
  EXPECT_EQ(buf[0], 6);
  EXPECT_EQ(buf[1], 3);
  Error parsed;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.code, ErrorCode::kNotMember);
  EXPECT_EQ(parsed.text, "key is not a mesh member");
  EXPECT_EQ(ErrorCodeName(parsed.code), "not_member");

  std::string long_text(400, 'x');
  Serialize(Error{ErrorCode::kProtocol, long_text}, &buf);
  EXPECT_EQ(buf.size(), kMaxErrorSize);
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(parsed.text.size(), kMaxErrorTextSize);

  // Codes from a newer relay still parse; they have no name here.
  buf[1] = 200;
  ASSERT_TRUE(Parse(AsBytes(buf), &parsed));
  EXPECT_EQ(static_cast<uint8_t>(parsed.code), 200);
  EXPECT_EQ(ErrorCodeName(parsed.code), "unknown");

  // An Error needs its code byte.
  const std::vector<uint8_t> bare = {6};
  EXPECT_FALSE(Parse(AsBytes(bare), &parsed));
}

TEST(RelayFrameTest, UnknownTypesAndEmptyInputAreRejected) {
  EXPECT_EQ(Classify(Bytes()), std::nullopt);
  for (int type : {0, 7, 255}) {
    std::vector<uint8_t> buf(kChallengeSize, 0);
    buf[0] = static_cast<uint8_t>(type);
    EXPECT_EQ(Classify(AsBytes(buf)), std::nullopt) << type;
  }
}

}  // namespace
}  // namespace tunnelmesh::wire::relay
