// DnsServer on loopback sockets (port 0): UDP and TCP answers from the published zone, several
// queries on one TCP connection, forwarding to an upstream (a UDP socket the test answers from)
// with the client's ID restored, and REFUSED without one.
#include "node-agent/dns/dns_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using dns::Message;

const IpAddress kLoopback = IpAddress::Parse("127.0.0.1").value();

std::shared_ptr<const dns::Zone> TestZone() {
  dns::ZoneConfig c;
  c.ranges = {Prefix::Parse("100.64.0.0/10").value()};
  return std::make_shared<const dns::Zone>(
      c, std::vector<dns::ZoneMember>{{"bob", {}, {IpAddress::Parse("100.64.0.2").value()}}});
}

std::vector<uint8_t> Query(uint16_t id, const std::string& name) {
  Message q;
  q.header.id = id;
  q.header.rd = true;
  q.questions.push_back({name, dns::kTypeA, dns::kClassIn});
  return dns::Encode(q).value();
}

sockaddr_in Addr(const Endpoint& e) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(e.port());
  std::memcpy(&a.sin_addr, e.address().bytes(), 4);
  return a;
}

// Waits up to 5 s for a datagram on `fd`.
std::optional<std::vector<uint8_t>> Receive(int fd, sockaddr_in* from = nullptr) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return std::nullopt;
  std::vector<uint8_t> buf(65535);
  socklen_t len = sizeof(sockaddr_in);
  const ssize_t n = recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(from),
                             from != nullptr ? &len : nullptr);
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Message UdpAsk(const Endpoint& server, const std::vector<uint8_t>& query) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  const sockaddr_in to = Addr(server);
  sendto(fd, query.data(), query.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  std::optional<std::vector<uint8_t>> reply = Receive(fd);
  close(fd);
  if (!reply.has_value()) return Message{};
  return dns::Decode(*reply).value_or(Message{});
}

TEST(DnsServerTest, AnswersOverUdpAndTcp) {
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok()) << server.status();
  const Endpoint at = (*server)->endpoints()[0];
  ASSERT_NE(at.port(), 0);

  // Before a zone: refused.
  EXPECT_EQ(UdpAsk(at, Query(1, "bob.mesh")).header.rcode, dns::Rcode::kRefused);
  (*server)->SetZone(TestZone());
  Message r = UdpAsk(at, Query(2, "bob.mesh"));
  EXPECT_EQ(r.header.id, 2);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("100.64.0.2").value()));
  EXPECT_EQ(UdpAsk(at, Query(3, "nobody.mesh")).header.rcode, dns::Rcode::kNxDomain);

  // TCP: two queries written at once, two answers in order.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in to = Addr(at);
  ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to), 0);
  std::vector<uint8_t> out;
  for (uint16_t id : {10, 11}) {
    const std::vector<uint8_t> q = Query(id, id == 10 ? "bob.mesh" : "nobody.mesh");
    out.push_back(static_cast<uint8_t>(q.size() >> 8));
    out.push_back(static_cast<uint8_t>(q.size()));
    out.insert(out.end(), q.begin(), q.end());
  }
  ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size()));
  std::vector<uint8_t> in;
  std::vector<Message> answers;
  while (answers.size() < 2) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    uint8_t chunk[4096];
    const ssize_t n = read(fd, chunk, sizeof chunk);
    ASSERT_GT(n, 0);
    in.insert(in.end(), chunk, chunk + n);
    while (in.size() >= 2 && in.size() >= 2 + (size_t{in[0]} << 8 | in[1])) {
      const size_t len = size_t{in[0]} << 8 | in[1];
      answers.push_back(dns::Decode(absl::MakeConstSpan(in.data() + 2, len)).value());
      in.erase(in.begin(), in.begin() + static_cast<ptrdiff_t>(2 + len));
    }
  }
  close(fd);
  EXPECT_EQ(answers[0].header.id, 10);
  EXPECT_EQ(answers[0].answers.size(), 1u);
  EXPECT_EQ(answers[1].header.id, 11);
  EXPECT_EQ(answers[1].header.rcode, dns::Rcode::kNxDomain);
  EXPECT_EQ((*server)->queries(dns::Outcome::kAnswered), 2u);
  EXPECT_EQ((*server)->queries(dns::Outcome::kNxDomain), 2u);
  EXPECT_EQ((*server)->queries(dns::Outcome::kRefused), 1u);
}

TEST(DnsServerTest, ForwardsOutsideTheZoneToTheUpstream) {
  // The upstream: a UDP socket this test answers from.
  const int up = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in up_addr = Addr(Endpoint(kLoopback, 0));
  ASSERT_EQ(bind(up, reinterpret_cast<sockaddr*>(&up_addr), sizeof up_addr), 0);
  socklen_t len = sizeof up_addr;
  getsockname(up, reinterpret_cast<sockaddr*>(&up_addr), &len);
  const Endpoint upstream(kLoopback, ntohs(up_addr.sin_port));

  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = upstream});
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->SetZone(TestZone());
  const Endpoint at = (*server)->endpoints()[0];

  const int client = socket(AF_INET, SOCK_DGRAM, 0);
  const sockaddr_in to = Addr(at);
  const std::vector<uint8_t> q = Query(0x4242, "example.com");
  sendto(client, q.data(), q.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  sockaddr_in from{};
  std::optional<std::vector<uint8_t>> forwarded = Receive(up, &from);
  ASSERT_TRUE(forwarded.has_value());
  Message fq = dns::Decode(*forwarded).value();
  ASSERT_EQ(fq.questions.size(), 1u);
  EXPECT_EQ(fq.questions[0].name, "example.com");
  // The upstream answers under the ID it was sent.
  Message answer = fq;
  answer.header.qr = true;
  answer.header.ra = true;
  answer.answers.push_back(
      {"example.com", dns::kTypeA, dns::kClassIn, 60, IpAddress::Parse("192.0.2.1").value()});
  const std::vector<uint8_t> bytes = dns::Encode(answer).value();
  sendto(up, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&from), sizeof from);
  std::optional<std::vector<uint8_t>> reply = Receive(client);
  ASSERT_TRUE(reply.has_value());
  Message r = dns::Decode(*reply).value();
  EXPECT_EQ(r.header.id, 0x4242);  // The client's ID again.
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("192.0.2.1").value()));
  // Mesh names are still answered locally.
  EXPECT_EQ(UdpAsk(at, Query(5, "bob.mesh")).answers.size(), 1u);
  close(client);
  close(up);
}

TEST(DnsServerTest, BusyPortNamesTheFlag) {
  absl::StatusOr<std::unique_ptr<DnsServer>> first =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<DnsServer>> second =
      DnsServer::Start({.addresses = {kLoopback},
                        .port = (*first)->endpoints()[0].port(),
                        .upstream = std::nullopt});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(std::string(second.status().message()).find("--dns-port"), std::string::npos)
      << second.status();
}

}  // namespace
}  // namespace tunnelmesh
