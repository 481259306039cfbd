// DnsServer on loopback sockets (port 0): UDP and TCP answers from the published zone, several
// queries on one TCP connection, several zones (each question answered by the zone covering it),
// forwarding to an upstream (a UDP socket the test answers from) with the client's ID restored,
// a TCP client's question forwarded over TCP (a TCP listener the test answers from), REFUSED
// without an upstream, truncation over UDP with the whole answer over TCP, and a burst of UDP
// queries (answered in batches) losing none, and TCP accepts that run out of descriptors pausing
// instead of spinning, then recovering.
#include "lib/dns/server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "lib/dns/server_test_client.h"

namespace tunnelmesh {
namespace {

using dns::Message;
using dns::testing::AskTcp;
using dns::testing::AskUdp;
using dns::testing::QueryBytes;
using dns::testing::ReceiveDatagram;
using dns::testing::SockaddrOf;

const IpAddress kLoopback = IpAddress::Parse("127.0.0.1").value();

std::shared_ptr<const dns::Zone> TestZone(const std::string& domain = "mesh",
                                          const std::string& range = "100.64.0.0/10",
                                          const std::string& bob = "100.64.0.2") {
  dns::ZoneConfig c;
  c.domain = domain;
  c.ranges = {Prefix::Parse(range).value()};
  return std::make_shared<const dns::Zone>(
      c, std::vector<dns::ZoneMember>{{"bob", {}, {IpAddress::Parse(bob).value()}}});
}

TEST(DnsServerTest, AnswersOverUdpAndTcp) {
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok()) << server.status();
  const Endpoint at = (*server)->endpoints()[0];
  ASSERT_NE(at.port(), 0);

  // Before a zone: refused.
  EXPECT_EQ(AskUdp(at, QueryBytes(1, "bob.mesh")).header.rcode, dns::Rcode::kRefused);
  (*server)->SetZone(TestZone());
  Message r = AskUdp(at, QueryBytes(2, "bob.mesh"));
  EXPECT_EQ(r.header.id, 2);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("100.64.0.2").value()));
  EXPECT_EQ(AskUdp(at, QueryBytes(3, "nobody.mesh")).header.rcode, dns::Rcode::kNxDomain);

  // TCP: two queries written at once, two answers in order.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in to = SockaddrOf(at);
  ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to), 0);
  std::vector<uint8_t> out;
  for (uint16_t id : {10, 11}) {
    const std::vector<uint8_t> q = QueryBytes(id, id == 10 ? "bob.mesh" : "nobody.mesh");
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

TEST(DnsServerTest, EachQuestionIsAnsweredByTheZoneCoveringIt) {
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok()) << server.status();
  const Endpoint at = (*server)->endpoints()[0];
  (*server)->SetZones({TestZone("mesh", "100.64.0.0/16", "100.64.0.2"),
                       TestZone("corp.example", "10.20.0.0/16", "10.20.0.7")});
  Message r = AskUdp(at, QueryBytes(1, "bob.mesh"));
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("100.64.0.2").value()));
  r = AskUdp(at, QueryBytes(2, "BOB.corp.example"));
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("10.20.0.7").value()));
  // Reverse zones of both ranges.
  r = AskUdp(at, QueryBytes(3, "7.0.20.10.in-addr.arpa", dns::kTypePtr));
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(std::string("bob.corp.example")));
  r = AskUdp(at, QueryBytes(4, "2.0.64.100.in-addr.arpa", dns::kTypePtr));
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(std::string("bob.mesh")));
  // NXDOMAIN carries the SOA of the zone asked, not of the first one.
  r = AskUdp(at, QueryBytes(5, "nobody.corp.example"));
  EXPECT_EQ(r.header.rcode, dns::Rcode::kNxDomain);
  ASSERT_EQ(r.authority.size(), 1u);
  EXPECT_EQ(r.authority[0].name, "corp.example");
  EXPECT_EQ(AskUdp(at, QueryBytes(6, "bob.example")).header.rcode, dns::Rcode::kRefused);
  EXPECT_EQ(AskUdp(at, QueryBytes(7, "9.9.9.9.in-addr.arpa", dns::kTypePtr)).header.rcode,
            dns::Rcode::kRefused);
  // Back to one zone, then none.
  (*server)->SetZone(TestZone("corp.example", "10.20.0.0/16", "10.20.0.7"));
  EXPECT_EQ(AskUdp(at, QueryBytes(8, "bob.mesh")).header.rcode, dns::Rcode::kRefused);
  EXPECT_EQ((*server)->zones()->size(), 1u);
  (*server)->SetZone(nullptr);
  EXPECT_EQ(AskUdp(at, QueryBytes(9, "bob.corp.example")).header.rcode, dns::Rcode::kRefused);
  EXPECT_EQ((*server)->queries(dns::Outcome::kAnswered), 4u);
  EXPECT_EQ((*server)->queries(dns::Outcome::kNxDomain), 1u);
  EXPECT_EQ((*server)->queries(dns::Outcome::kRefused), 4u);
}

TEST(DnsServerTest, RespondFromZonesWithSeveralZonesStillAnswersMalformedQueries) {
  const dns::ZoneSet zones = {TestZone("mesh", "100.64.0.0/16", "100.64.0.2"),
                              TestZone("corp.example", "10.20.0.0/16", "10.20.0.7")};
  // A header claiming a question that is not there: FORMERR, with the query's ID.
  std::vector<uint8_t> truncated = QueryBytes(0x1234, "bob.mesh");
  truncated.resize(14);
  dns::Reply reply = dns::RespondFromZones(zones, truncated, dns::Transport::kTcp, false);
  EXPECT_EQ(reply.outcome, dns::Outcome::kFormErr);
  // Two questions: FORMERR too, whichever zone they name.
  Message two;
  two.header.id = 7;
  two.questions = {{"bob.mesh", dns::kTypeA, dns::kClassIn},
                   {"bob.corp.example", dns::kTypeA, dns::kClassIn}};
  reply = dns::RespondFromZones(zones, dns::Encode(two).value(), dns::Transport::kTcp, false);
  EXPECT_EQ(reply.outcome, dns::Outcome::kFormErr);
  // A response is dropped; outside every zone is handed back for forwarding when allowed.
  std::vector<uint8_t> response = QueryBytes(8, "bob.mesh");
  response[2] |= 0x80;
  EXPECT_EQ(dns::RespondFromZones(zones, response, dns::Transport::kUdp, false).outcome,
            dns::Outcome::kDropped);
  EXPECT_EQ(dns::RespondFromZones(zones, QueryBytes(9, "example.com"), dns::Transport::kUdp, true)
                .outcome,
            dns::Outcome::kForward);
  EXPECT_EQ(
      dns::RespondFromZones({}, QueryBytes(10, "bob.mesh"), dns::Transport::kUdp, false).outcome,
      dns::Outcome::kRefused);
}

TEST(DnsServerTest, ForwardsOutsideTheZoneToTheUpstream) {
  // The upstream: a UDP socket this test answers from.
  const int up = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in up_addr = SockaddrOf(Endpoint(kLoopback, 0));
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
  const sockaddr_in to = SockaddrOf(at);
  const std::vector<uint8_t> q = QueryBytes(0x4242, "example.com");
  sendto(client, q.data(), q.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  sockaddr_in from{};
  std::optional<std::vector<uint8_t>> forwarded = ReceiveDatagram(up, &from);
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
  std::optional<std::vector<uint8_t>> reply = ReceiveDatagram(client);
  ASSERT_TRUE(reply.has_value());
  Message r = dns::Decode(*reply).value();
  EXPECT_EQ(r.header.id, 0x4242);  // The client's ID again.
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse("192.0.2.1").value()));
  // Mesh names are still answered locally.
  EXPECT_EQ(AskUdp(at, QueryBytes(5, "bob.mesh")).answers.size(), 1u);
  close(client);
  close(up);
}

TEST(DnsServerTest, ATcpClientsQuestionGoesUpstreamOverTcp) {
  // The upstream: a TCP listener this test answers from, with the length-prefixed framing of
  // RFC 7766, and an answer too big for a UDP datagram of 512 bytes.
  const int up = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in up_addr = SockaddrOf(Endpoint(kLoopback, 0));
  ASSERT_EQ(bind(up, reinterpret_cast<sockaddr*>(&up_addr), sizeof up_addr), 0);
  ASSERT_EQ(listen(up, 4), 0);
  socklen_t len = sizeof up_addr;
  getsockname(up, reinterpret_cast<sockaddr*>(&up_addr), &len);
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback},
                        .port = 0,
                        .upstream = Endpoint(kLoopback, ntohs(up_addr.sin_port))});
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->SetZone(TestZone());
  const Endpoint at = (*server)->endpoints()[0];

  std::thread upstream([up] {
    pollfd p{up, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return;
    const int conn = accept(up, nullptr, nullptr);
    uint8_t buffer[600];
    size_t have = 0;
    while (have < 2 || have < 2 + (size_t{buffer[0]} << 8 | buffer[1])) {
      const ssize_t n = read(conn, buffer + have, sizeof buffer - have);
      if (n <= 0) break;
      have += static_cast<size_t>(n);
    }
    Message q = dns::Decode(absl::MakeConstSpan(buffer + 2, have - 2)).value();
    Message answer = q;
    answer.header.qr = true;
    for (int i = 0; i < 40; ++i) {
      answer.answers.push_back({"big.example", dns::kTypeAaaa, dns::kClassIn, 60,
                                IpAddress::Parse("2001:db8::" + std::to_string(i + 1)).value()});
    }
    std::vector<uint8_t> bytes = dns::Encode(answer).value();
    bytes.insert(bytes.begin(),
                 {static_cast<uint8_t>(bytes.size() >> 8), static_cast<uint8_t>(bytes.size())});
    (void)!write(conn, bytes.data(), bytes.size());
    close(conn);
  });
  const Message r = AskTcp(at, QueryBytes(0x7777, "big.example", dns::kTypeAaaa));
  upstream.join();
  EXPECT_EQ(r.header.id, 0x7777);
  EXPECT_FALSE(r.header.tc);
  EXPECT_EQ(r.answers.size(), 40u) << "the whole answer, over TCP end to end";
  close(up);
}

TEST(DnsServerTest, AnAnswerTooBigForUdpIsTruncatedAndWholeOverTcp) {
  std::vector<IpAddress> many;
  for (int i = 0; i < 60; ++i) {
    many.push_back(IpAddress::Parse("fd00::" + std::to_string(i + 1)).value());
  }
  dns::ZoneConfig c;
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok());
  (*server)->SetZone(
      std::make_shared<const dns::Zone>(c, std::vector<dns::ZoneMember>{{"wide", {}, many}}));
  const Endpoint at = (*server)->endpoints()[0];
  const Message udp = AskUdp(at, QueryBytes(1, "wide.mesh", dns::kTypeAaaa));
  EXPECT_TRUE(udp.header.tc);
  EXPECT_LT(udp.answers.size(), 60u);
  const Message tcp = AskTcp(at, QueryBytes(2, "wide.mesh", dns::kTypeAaaa));
  EXPECT_FALSE(tcp.header.tc);
  EXPECT_EQ(tcp.answers.size(), 60u);
  EXPECT_GE((*server)->truncated(), 1u);
}

TEST(DnsServerTest, ABurstOfUdpQueriesIsAnsweredWhole) {
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok());
  (*server)->SetZone(TestZone());
  const int client = socket(AF_INET, SOCK_DGRAM, 0);
  const int buffer = 1 << 20;
  setsockopt(client, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  const sockaddr_in to = SockaddrOf((*server)->endpoints()[0]);
  // More than the server reads per batch, sent before reading any answer.
  constexpr int kQueries = 200;
  for (int id = 0; id < kQueries; ++id) {
    const std::vector<uint8_t> q = QueryBytes(static_cast<uint16_t>(id), "bob.mesh");
    sendto(client, q.data(), q.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  }
  std::vector<bool> seen(kQueries, false);
  for (int i = 0; i < kQueries; ++i) {
    std::optional<std::vector<uint8_t>> reply = ReceiveDatagram(client);
    ASSERT_TRUE(reply.has_value()) << "answer " << i << " of " << kQueries << " missing";
    const Message r = dns::Decode(*reply).value();
    ASSERT_LT(r.header.id, kQueries);
    EXPECT_FALSE(seen[r.header.id]) << "answered twice: " << r.header.id;
    seen[r.header.id] = true;
    EXPECT_EQ(r.answers.size(), 1u);
  }
  close(client);
}

// The process's CPU time (user and system, every thread).
absl::Duration CpuTime() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return absl::DurationFromTimeval(usage.ru_utime) + absl::DurationFromTimeval(usage.ru_stime);
}

// With no descriptor left, accept4 fails (EMFILE) while the connection stays in the listener's
// backlog, so the listener stays readable: the loop must pause accepting, not spin on it. Once
// descriptors are free again, the waiting connection is accepted and answered.
TEST(DnsServerTest, AcceptOutOfDescriptorsPausesAndRecovers) {
  absl::StatusOr<std::unique_ptr<DnsServer>> server =
      DnsServer::Start({.addresses = {kLoopback}, .port = 0, .upstream = std::nullopt});
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->SetZone(TestZone());
  const Endpoint at = (*server)->endpoints()[0];
  const int fd = socket(AF_INET, SOCK_STREAM, 0);  // Made before the descriptors run out.
  ASSERT_GE(fd, 0);

  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // RLIMIT_NOFILE bounds descriptor numbers: at the lowest free one, nothing more can be opened.
  const int lowest_free = dup(0);
  ASSERT_GE(lowest_free, 0);
  close(lowest_free);
  rlimit exhausted = saved;
  exhausted.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &exhausted), 0);
  const sockaddr_in to = SockaddrOf(at);
  const int connected = connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  const int connect_errno = errno;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while ((*server)->accept_pauses() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const uint64_t pauses_before = (*server)->accept_pauses();
  // A window of known length: a spinning loop would burn most of it on the server's thread.
  const absl::Duration cpu_before = CpuTime();
  absl::SleepFor(absl::Milliseconds(500));
  const absl::Duration cpu = CpuTime() - cpu_before;
  const uint64_t pauses = (*server)->accept_pauses() - pauses_before;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);

  ASSERT_EQ(connected, 0) << strerror(connect_errno);
  EXPECT_GE(pauses_before, 1u) << "accept never ran out of descriptors";
  // About one retry per 100 ms pause; a spinning loop counts thousands.
  EXPECT_LE(pauses, 10u);
  EXPECT_LT(cpu, absl::Milliseconds(150)) << "the accept loop spins";

  // Recovery: the connection waiting in the backlog is accepted and answered.
  const std::vector<uint8_t> q = QueryBytes(7, "bob.mesh");
  std::vector<uint8_t> out = {static_cast<uint8_t>(q.size() >> 8), static_cast<uint8_t>(q.size())};
  out.insert(out.end(), q.begin(), q.end());
  ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size()));
  std::vector<uint8_t> in;
  while (in.size() < 2 || in.size() < 2 + (size_t{in[0]} << 8 | in[1])) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1) << "no answer after descriptors were free again";
    uint8_t chunk[4096];
    const ssize_t n = read(fd, chunk, sizeof chunk);
    ASSERT_GT(n, 0);
    in.insert(in.end(), chunk, chunk + n);
  }
  absl::StatusOr<Message> answer = dns::Decode(absl::MakeConstSpan(in.data() + 2, in.size() - 2));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->header.id, 7);
  EXPECT_EQ(answer->answers.size(), 1u);
  close(fd);
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
  // The operator names its own flags.
  absl::StatusOr<std::unique_ptr<DnsServer>> third =
      DnsServer::Start({.addresses = {kLoopback},
                        .port = (*first)->endpoints()[0].port(),
                        .upstream = std::nullopt,
                        .address_flags = "--listen-address or --dns-port"});
  ASSERT_FALSE(third.ok());
  EXPECT_NE(std::string(third.status().message()).find("--listen-address or --dns-port"),
            std::string::npos)
      << third.status();
}

}  // namespace
}  // namespace tunnelmesh
