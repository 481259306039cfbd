#include "lib/metrics/http_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Endpoint Loopback(uint16_t port = 0) {
  return Endpoint(IpAddress::Parse("127.0.0.1").value(), port);
}

int Connect(const Endpoint& to) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(to.port());
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::string Request(const Endpoint& to, const std::string& bytes) {
  const int fd = Connect(to);
  if (fd < 0) return "connect failed";
  (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string out = ReadAll(fd);
  close(fd);
  return out;
}

std::unique_ptr<MetricsServer> StartOrDie(MetricsServer::Render render, ServerLimits limits = {}) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(
      Loopback(), "--metrics-address", "--no-metrics", std::move(render), limits);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(ParseListenAddressTest, Forms) {
  EXPECT_EQ(ParseListenAddress("127.0.0.1:7710", "--f")->ToString(), "127.0.0.1:7710");
  EXPECT_EQ(ParseListenAddress("[::1]:0", "--f")->port(), 0);
  EXPECT_EQ(ParseListenAddress("0.0.0.0:65535", "--f")->port(), 65535);
  // Brackets around IPv4 too: the chart writes "[$(POD_IP)]:PORT" for either family.
  EXPECT_EQ(ParseListenAddress("[10.0.0.5]:7710", "--f")->ToString(), "10.0.0.5:7710");
  for (const char* bad : {"", "127.0.0.1", "localhost:7710", "::1:7710", "[::1]", "1.2.3.4:65536",
                          "1.2.3.4:-1", "1.2.3.4:+80", "1.2.3.4:"}) {
    absl::StatusOr<Endpoint> parsed = ParseListenAddress(bad, "--metrics-address");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(std::string(parsed.status().message()), StartsWith("--metrics-address")) << bad;
  }
}

TEST(MetricsServerTest, ServesMetricsAndErrors) {
  std::atomic<int> renders{0};
  auto server = StartOrDie([&] {
    ++renders;
    return std::string("a_metric 1\n");
  });
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->endpoint().port(), 0);
  const std::string ok = Request(server->endpoint(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ok, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("\r\n\r\na_metric 1\n"));
  EXPECT_THAT(Request(server->endpoint(), "GET / HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Request(server->endpoint(), "DELETE /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(Request(server->endpoint(), "garbage\r\n\r\n"), StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(Request(server->endpoint(), std::string(9000, 'A')), StartsWith("HTTP/1.1 431"));
  EXPECT_EQ(renders.load(), 1);
  EXPECT_EQ(server->scrapes(), 1u);
  EXPECT_EQ(server->bad_requests(), 4u);
}

TEST(MetricsServerTest, RenderFailureIs503AndCounted) {
  auto server = StartOrDie([] { return std::optional<std::string>(); });
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(Request(server->endpoint(), "GET /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 503"));
  EXPECT_EQ(server->unavailable(), 1u);
  EXPECT_EQ(server->scrapes(), 0u);
}

TEST(MetricsServerTest, RequestInPiecesAndLargeBody) {
  const std::string big(3 << 20, 'x');  // Larger than any socket buffer: written in pieces.
  auto server = StartOrDie([&] { return big; });
  ASSERT_NE(server, nullptr);
  const int fd = Connect(server->endpoint());
  ASSERT_GE(fd, 0);
  for (const char* piece : {"GET /met", "rics HTTP/1.1\r\n", "\r\n"}) {
    (void)!send(fd, piece, std::strlen(piece), MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string response = ReadAll(fd);
  close(fd);
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_EQ(response.size() - response.find("\r\n\r\n") - 4, big.size());
}

TEST(MetricsServerTest, SilentClientIsClosedAtTheReadDeadline) {
  ServerLimits limits;
  limits.read_timeout = std::chrono::milliseconds(100);
  auto server = StartOrDie([] { return std::string(); }, limits);
  ASSERT_NE(server, nullptr);
  const int fd = Connect(server->endpoint());
  ASSERT_GE(fd, 0);
  (void)!send(fd, "GET /metrics", 12, MSG_NOSIGNAL);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(ReadAll(fd), "");  // Closed without an answer.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  close(fd);
  EXPECT_EQ(server->timeouts(), 1u);
}

TEST(MetricsServerTest, ConnectionsOverTheCapGet503AndOthersStillWork) {
  ServerLimits limits;
  limits.max_connections = 2;
  auto server = StartOrDie([] { return std::string("x 1\n"); }, limits);
  ASSERT_NE(server, nullptr);
  std::vector<int> idle;
  for (int i = 0; i < 2; ++i) idle.push_back(Connect(server->endpoint()));
  // The server sees the first two before the third: poll until both are accepted.
  std::string third;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    third = Request(server->endpoint(), "GET /metrics HTTP/1.1\r\n\r\n");
    if (third.rfind("HTTP/1.1 503", 0) == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_THAT(third, StartsWith("HTTP/1.1 503"));
  EXPECT_GE(server->refused_connections(), 1u);
  for (int fd : idle) close(fd);
  std::string after;
  while (std::chrono::steady_clock::now() < deadline) {
    after = Request(server->endpoint(), "GET /metrics HTTP/1.1\r\n\r\n");
    if (after.rfind("HTTP/1.1 200", 0) == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_THAT(after, StartsWith("HTTP/1.1 200"));
}

TEST(MetricsServerTest, BusyPortNamesTheFlag) {
  auto first = StartOrDie([] { return std::string(); });
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<MetricsServer>> second = MetricsServer::Start(
      first->endpoint(), "--metrics-address", "--no-metrics", [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsAlreadyExists(second.status()));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("--metrics-address"));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("--no-metrics"));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("already in use"));
}

TEST(MetricsServerTest, AddressThatIsNotLocalNamesTheFlag) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start(Endpoint(IpAddress::Parse("192.0.2.1").value(), 0), "--metrics-address",
                           "", [] { return std::string(); });
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr("192.0.2.1 is not an address of this host: check --metrics-address"));
}

}  // namespace
}  // namespace tunnelmesh::metrics
