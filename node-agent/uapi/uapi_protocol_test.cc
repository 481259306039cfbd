#include "node-agent/uapi/uapi_protocol.h"

#include <errno.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::uapi {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kHexA(64, 'a');
const std::string kHexB = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef";

std::vector<std::string> Lines(std::initializer_list<const char*> lines) {
  return std::vector<std::string>(lines.begin(), lines.end());
}

TEST(RequestFramerTest, SplitsRequestsAcrossFeeds) {
  RequestFramer framer;
  framer.Feed("get=");
  absl::StatusOr<std::optional<std::vector<std::string>>> next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  framer.Feed("1\n\nset=1\nlisten_port=5\n\nset");
  next = framer.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_THAT(**next, ElementsAre("get=1"));
  next = framer.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_THAT(**next, ElementsAre("set=1", "listen_port=5"));
  next = framer.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
}

TEST(RequestFramerTest, LongLineIsRefused) {
  RequestFramer framer;
  framer.Feed("set=1\nendpoint=");
  framer.Feed(std::string(kMaxLineLength, '1'));
  absl::StatusOr<std::optional<std::vector<std::string>>> next = framer.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), absl::StatusCode::kResourceExhausted);
  // Once failed, it stays failed.
  framer.Feed("\n\n");
  EXPECT_FALSE(framer.Next().ok());
}

TEST(RequestFramerTest, TooManyLinesIsRefused) {
  RequestFramer framer;
  std::string many;
  for (size_t i = 0; i <= kMaxLinesPerRequest + 1; ++i) many += "x=1\n";
  framer.Feed(many);
  EXPECT_FALSE(framer.Next().ok());
}

TEST(ParseRequestTest, Get) {
  absl::StatusOr<Request> request = ParseRequest(Lines({"get=1"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->kind, Request::Kind::kGet);
  EXPECT_FALSE(ParseRequest(Lines({"get=1", "private_key=00"})).ok());
}

TEST(ParseRequestTest, SetAsWgSetSendsIt) {
  const std::string key_a = "public_key=" + kHexA;
  const std::string psk = "preshared_key=" + kHexB;
  const std::string private_key = "private_key=" + kHexB;
  absl::StatusOr<Request> request = ParseRequest(
      {"set=1", private_key, "listen_port=51820", "fwmark=0", "replace_peers=true", key_a,
       "update_only=true", psk, "endpoint=[fd00::1]:51820", "persistent_keepalive_interval=25",
       "replace_allowed_ips=true", "allowed_ip=10.0.0.1/24", "allowed_ip=fd00::/64",
       "protocol_version=1", "public_key=" + kHexB, "remove=true"});
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->kind, Request::Kind::kSet);
  const SetRequest& set = request->set;
  ASSERT_TRUE(set.private_key.has_value());
  EXPECT_EQ(set.private_key->data()[0], 0x01);
  EXPECT_EQ(set.private_key->data()[8], 0x01);  // Upper-case hex too.
  EXPECT_EQ(set.listen_port, 51820);
  EXPECT_EQ(set.fwmark, 0u);
  EXPECT_TRUE(set.replace_peers);
  ASSERT_EQ(set.peers.size(), 2u);
  const PeerChange& a = set.peers[0];
  EXPECT_EQ(a.public_key.bytes[0], 0xaa);
  EXPECT_TRUE(a.update_only);
  EXPECT_FALSE(a.remove);
  ASSERT_TRUE(a.preshared_key.has_value());
  EXPECT_EQ(a.preshared_key->data()[1], 0x23);
  EXPECT_EQ(a.endpoint, Endpoint::Parse("[fd00::1]:51820").value());
  EXPECT_EQ(a.persistent_keepalive, 25);
  EXPECT_TRUE(a.replace_allowed_ips);
  EXPECT_THAT(a.allowed_ips, ElementsAre(Prefix::Parse("10.0.0.0/24").value(),
                                         Prefix::Parse("fd00::/64").value()));
  EXPECT_TRUE(set.peers[1].remove);
  EXPECT_TRUE(set.peers[1].allowed_ips.empty());
}

void ExpectSetError(std::vector<std::string> lines, const std::string& message) {
  absl::StatusOr<Request> request = ParseRequest(lines);
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(request.status().message(), message);
}

TEST(ParseRequestTest, ErrorsNameTheLineAndKey) {
  ExpectSetError({"put=1"}, "the first line is \"put=1\", not \"get=1\" or \"set=1\"");
  ExpectSetError({}, "the first line is \"\", not \"get=1\" or \"set=1\"");
  ExpectSetError({"set=1", "listen_port=70000"},
                 "line 2: listen_port: \"70000\" is not a port (0-65535)");
  ExpectSetError({"set=1", "endpoint=1.2.3.4:5"},
                 "line 2: endpoint: unknown interface key (or a peer key before public_key)");
  ExpectSetError({"set=1", "public_key=" + kHexA, "allowed_ip=10.0.0.1"},
                 "line 3: allowed_ip: \"10.0.0.1\" is not an IP prefix (expected ADDRESS/LENGTH)");
  ExpectSetError({"set=1", "public_key=" + kHexA, "endpoint=example.com:5"},
                 "line 3: endpoint: \"example.com:5\" is not IP:PORT or [IPv6]:PORT");
  ExpectSetError({"set=1", "public_key=" + kHexA, "remove=yes"},
                 "line 3: remove: \"yes\" is not \"true\"");
  ExpectSetError({"set=1", "public_key=" + kHexA, "protocol_version=2"},
                 "line 3: protocol_version: \"2\" is not 1 (the only version)");
  ExpectSetError({"set=1", "public_key=" + kHexA, "colour=red"},
                 "line 3: colour: unknown peer key");
  ExpectSetError({"set=1", "no equals sign"}, "line 2: \"no equals sign\" is not key=value");
}

TEST(ParseRequestTest, KeysAreNeverEchoed) {
  const std::string almost_key = std::string(63, '7') + "g";
  absl::StatusOr<Request> request = ParseRequest({"set=1", "private_key=" + almost_key});
  ASSERT_FALSE(request.ok());
  EXPECT_THAT(std::string(request.status().message()), Not(HasSubstr("7777")));
  request = ParseRequest({"set=1", "public_key=" + kHexA, "preshared_key=" + almost_key});
  ASSERT_FALSE(request.ok());
  EXPECT_THAT(std::string(request.status().message()), Not(HasSubstr("7777")));
}

TEST(FormatTest, GetReplyInWgOrder) {
  DeviceState state;
  uint8_t private_key[kKeySize];
  for (size_t i = 0; i < kKeySize; ++i) private_key[i] = static_cast<uint8_t>(i);
  state.private_key = SecretKey(private_key);
  state.listen_port = 51820;
  PeerState peer;
  peer.public_key.bytes.fill(0xab);
  peer.endpoint = Endpoint::Parse("192.0.2.1:51821").value();
  peer.last_handshake_unix_nanos = 1'700'000'000'123'456'789;
  peer.rx_bytes = 10;
  peer.tx_bytes = 20;
  peer.persistent_keepalive = 25;
  peer.allowed_ips = {Prefix::Parse("10.0.0.0/24").value()};
  state.peers.push_back(std::move(peer));
  state.peers.push_back(PeerState{});
  EXPECT_EQ(FormatGetReply(state),
            "private_key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
            "listen_port=51820\nfwmark=0\n"
            "public_key=abababababababababababababababababababababababababababababababab\n"
            "preshared_key=" +
                std::string(64, '0') +
                "\nprotocol_version=1\nendpoint=192.0.2.1:51821\n"
                "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n"
                "tx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=25\n"
                "allowed_ip=10.0.0.0/24\n"
                "public_key=" +
                std::string(64, '0') + "\npreshared_key=" + std::string(64, '0') +
                "\nprotocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
                "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\nerrno=0\n\n");
}

TEST(FormatTest, ErrnoIsNegatedAsWgReadsIt) {
  EXPECT_EQ(FormatErrnoReply(0), "errno=0\n\n");
  EXPECT_EQ(FormatErrnoReply(EPERM), "errno=-1\n\n");
  EXPECT_EQ(ErrnoFor(absl::PermissionDeniedError("x")), EPERM);
  EXPECT_EQ(ErrnoFor(absl::InvalidArgumentError("x")), EINVAL);
  EXPECT_EQ(ErrnoFor(absl::UnimplementedError("x")), EOPNOTSUPP);
  EXPECT_EQ(ErrnoFor(absl::OkStatus()), 0);
}

}  // namespace
}  // namespace tunnelmesh::uapi
