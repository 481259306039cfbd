// Tests for the STUN server over real loopback sockets: our own client code (IPv4 and IPv6),
// Debian's RFC 3489 client binary, garbage, 420 answers, and a busy port.
#include "operator/stun/stun_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/net/ip.h"
#include "lib/wire/stun.h"

namespace tunnelmesh {
namespace {

using ::testing::HasSubstr;

// Debian's stun-client package (the Vovida RFC 3489 client, version 0.97).
constexpr char kStunClientBinary[] = "/usr/bin/stun";

constexpr auto kDeadline = std::chrono::seconds(5);

std::unique_ptr<StunServer> StartServer() {
  StunServer::Options options;
  options.port = 0;
  options.software = "tunnelmesh-test";
  absl::StatusOr<std::unique_ptr<StunServer>> server = StunServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

// A UDP socket on a loopback address with a kernel-chosen port.
class UdpClient {
 public:
  // Null when the host lacks that loopback (IPv6 disabled).
  static std::unique_ptr<UdpClient> Open(const IpAddress& loopback) {
    const int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    int off = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    sockaddr_in6 address;
    const socklen_t length = Endpoint(loopback, 0).ToSockaddrV6(&address);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
      close(fd);
      return nullptr;
    }
    sockaddr_in6 bound{};
    socklen_t bound_length = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_length);
    absl::StatusOr<Endpoint> local =
        Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&bound), bound_length);
    if (!local.ok()) {
      close(fd);
      return nullptr;
    }
    return std::unique_ptr<UdpClient>(new UdpClient(fd, *local));
  }
  ~UdpClient() { close(fd_); }

  const Endpoint& local() const { return local_; }

  void Send(const std::vector<uint8_t>& datagram, const Endpoint& to) {
    sockaddr_in6 address;
    const socklen_t length = to.ToSockaddrV6(&address);
    ASSERT_EQ(sendto(fd_, datagram.data(), datagram.size(), 0,
                     reinterpret_cast<const sockaddr*>(&address), length),
              static_cast<ssize_t>(datagram.size()));
  }

  // The next datagram, or nullopt after kDeadline.
  std::optional<std::vector<uint8_t>> Receive() {
    pollfd fds = {fd_, POLLIN, 0};
    const int timeout_ms = std::chrono::milliseconds(kDeadline).count();
    if (poll(&fds, 1, timeout_ms) != 1) return std::nullopt;
    std::vector<uint8_t> buffer(4096);
    const ssize_t n = recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return std::nullopt;
    buffer.resize(n);
    return buffer;
  }

 private:
  UdpClient(int fd, Endpoint local) : fd_(fd), local_(local) {}
  const int fd_;
  const Endpoint local_;
};

std::vector<uint8_t> EncodeRequest(const stun::TransactionId& id, bool fingerprint = true) {
  std::vector<uint8_t> buffer(stun::kMaxEncodedSize);
  const size_t n =
      stun::EncodeBindingRequest(id, {"tm-test-client", fingerprint}, absl::MakeSpan(buffer));
  buffer.resize(n);
  return buffer;
}

// Sends a Binding request and parses the answer the way the agent will.
stun::ParseResult Query(UdpClient& client, const Endpoint& server, std::mt19937& rng,
                        stun::BindingResponse* response) {
  stun::TransactionId id;
  for (uint8_t& byte : id) byte = static_cast<uint8_t>(rng());
  client.Send(EncodeRequest(id), server);
  std::optional<std::vector<uint8_t>> answer = client.Receive();
  if (!answer.has_value()) return stun::ParseResult::kTooShort;
  return stun::ParseBindingResponse(stun::Bytes(answer->data(), answer->size()), id, response);
}

// The server counts an answer once the kernel has taken it, which can be a moment after the client
// already holds it: poll the counter against a deadline.
bool CounterReaches(const std::atomic<uint64_t>& counter, uint64_t expected) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (counter.load() < expected) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return counter.load() == expected;
}

bool CounterAtLeast(const std::atomic<uint64_t>& counter, uint64_t minimum) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (counter.load() < minimum) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

IpAddress Loopback4() { return *IpAddress::Parse("127.0.0.1"); }
IpAddress Loopback6() { return *IpAddress::Parse("::1"); }

TEST(StunServerTest, AnswersOurClientOverIpv4WithTheSourceAddress) {
  std::unique_ptr<StunServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  ASSERT_NE(server->port(), 0);
  std::unique_ptr<UdpClient> client = UdpClient::Open(Loopback4());
  ASSERT_NE(client, nullptr);
  std::mt19937 rng(1);

  stun::BindingResponse response;
  ASSERT_EQ(Query(*client, Endpoint(Loopback4(), server->port()), rng, &response),
            stun::ParseResult::kOk);
  EXPECT_EQ(response.message_class, stun::MessageClass::kSuccessResponse);
  EXPECT_TRUE(response.from_xor_mapped_address);
  EXPECT_TRUE(response.has_fingerprint);
  // The dual-stack socket sees ::ffff:127.0.0.1 and answers with plain IPv4.
  EXPECT_EQ(response.mapped_address, client->local());
  EXPECT_TRUE(response.mapped_address.address().is_v4());

  // Again, to see the counters move one by one.
  ASSERT_EQ(Query(*client, Endpoint(Loopback4(), server->port()), rng, &response),
            stun::ParseResult::kOk);
  EXPECT_EQ(server->counters().requests.load(), 2u);
  EXPECT_TRUE(CounterReaches(server->counters().responses, 2));
  EXPECT_EQ(server->counters().malformed.load(), 0u);
  EXPECT_EQ(server->counters().error_responses.load(), 0u);
}

TEST(StunServerTest, AnswersOurClientOverIpv6) {
  std::unique_ptr<StunServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<UdpClient> client = UdpClient::Open(Loopback6());
  if (client == nullptr || !server->ipv6()) GTEST_SKIP() << "no IPv6 loopback on this host";
  std::mt19937 rng(2);

  stun::BindingResponse response;
  ASSERT_EQ(Query(*client, Endpoint(Loopback6(), server->port()), rng, &response),
            stun::ParseResult::kOk);
  EXPECT_EQ(response.mapped_address, client->local());
  EXPECT_TRUE(response.mapped_address.address().is_v6());
}

// Runs `command` through the shell and returns what it printed on stdout and stderr, and its exit
// status.
std::pair<std::string, int> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {"popen failed", -1};
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  const int status = pclose(pipe);
  return {output, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Debian's stun-client asserts that the server port lies in 1024-65000; kernel-chosen ports
// normally do, but a host may configure ip_local_port_range otherwise.
std::unique_ptr<StunServer> StartServerForClassicClient() {
  for (int attempt = 0; attempt < 20; ++attempt) {
    std::unique_ptr<StunServer> server = StartServer();
    if (server == nullptr) return nullptr;
    if (server->port() >= 1024 && server->port() <= 65000) return server;
  }
  return nullptr;
}

TEST(StunServerTest, DebianStunClientReadsItsMappedAddress) {
  if (access(kStunClientBinary, X_OK) != 0) {
    GTEST_SKIP() << kStunClientBinary << " is absent (Debian package stun-client)";
  }
  std::unique_ptr<StunServer> server = StartServerForClassicClient();
  ASSERT_NE(server, nullptr);

  // Test 1 of RFC 3489 section 10.1: one Binding request, no change asked. -v prints what the
  // client opened and what it parsed.
  const std::string command = std::string("timeout 30 ") + kStunClientBinary +
                              " 127.0.0.1:" + std::to_string(server->port()) + " -v 1";
  auto [output, status] = RunCommand(command);
  SCOPED_TRACE(output);
  EXPECT_EQ(status, 0);
  std::smatch opened;
  ASSERT_TRUE(std::regex_search(output, opened, std::regex(R"(Opened port (\d+))")));
  std::smatch mapped;
  ASSERT_TRUE(std::regex_search(output, mapped,
                                std::regex(R"(MappedAddress = (\d+\.\d+\.\d+\.\d+):(\d+))")));
  EXPECT_EQ(mapped[1].str(), "127.0.0.1");
  EXPECT_EQ(mapped[2].str(), opened[1].str());
  EXPECT_THAT(output, HasSubstr("mappedAddr=127.0.0.1:" + opened[1].str()));
  EXPECT_GE(server->counters().requests.load(), 1u);
  EXPECT_TRUE(CounterAtLeast(server->counters().responses, 1));
  EXPECT_EQ(server->counters().malformed.load(), 0u);
}

TEST(StunServerTest, DebianStunClientNatTestGetsRefusalsItCanRead) {
  if (access(kStunClientBinary, X_OK) != 0) {
    GTEST_SKIP() << kStunClientBinary << " is absent (Debian package stun-client)";
  }
  std::unique_ptr<StunServer> server = StartServerForClassicClient();
  ASSERT_NE(server, nullptr);

  // The full RFC 3489 NAT test also asks the server to answer from another address and port. This
  // server has none, so it answers those with 420; the client must still finish and report.
  const std::string command = std::string("timeout 60 ") + kStunClientBinary +
                              " 127.0.0.1:" + std::to_string(server->port());
  auto [output, status] = RunCommand(command);
  SCOPED_TRACE(output);
  EXPECT_NE(status, -1);
  EXPECT_THAT(output, HasSubstr("Primary:"));
  EXPECT_TRUE(CounterAtLeast(server->counters().responses, 1));
  EXPECT_TRUE(CounterAtLeast(server->counters().error_responses, 1));
  EXPECT_EQ(server->counters().malformed.load(), 0u);
}

TEST(StunServerTest, GarbageIsCountedAndTheServerKeepsAnswering) {
  std::unique_ptr<StunServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<UdpClient> client = UdpClient::Open(Loopback4());
  ASSERT_NE(client, nullptr);
  const Endpoint to(Loopback4(), server->port());
  std::mt19937 rng(3);

  std::vector<std::vector<uint8_t>> garbage;
  garbage.push_back({});                                // Empty datagram.
  garbage.push_back({0x00, 0x01});                      // Shorter than a header.
  garbage.push_back(std::vector<uint8_t>(20, 0));       // No cookie, not a Binding request.
  garbage.push_back(std::vector<uint8_t>(3000, 0x00));  // Longer than the server reads.
  std::vector<uint8_t> wireguard(148, 0x5A);            // A WireGuard handshake initiation.
  wireguard[0] = 1;
  wireguard[1] = wireguard[2] = wireguard[3] = 0;
  garbage.push_back(wireguard);
  std::vector<uint8_t> truncated = EncodeRequest({});  // A request cut short.
  truncated.resize(truncated.size() - 3);
  garbage.push_back(truncated);
  std::vector<uint8_t> bent = EncodeRequest({});  // A request with a broken FINGERPRINT.
  bent.back() ^= 1;
  garbage.push_back(bent);
  for (int i = 0; i < 100; ++i) {  // Random bytes, some with the cookie.
    std::vector<uint8_t> random(rng() % 200);
    for (uint8_t& byte : random) byte = static_cast<uint8_t>(rng());
    if (random.size() >= 8 && i % 2 == 0) {
      random[0] &= 0x3F;
      random[4] = 0x21, random[5] = 0x12, random[6] = 0xA4, random[7] = 0x42;
    }
    garbage.push_back(random);
  }
  for (const std::vector<uint8_t>& datagram : garbage) client->Send(datagram, to);
  // A Binding indication is well-formed and ignored, not malformed.
  std::vector<uint8_t> indication = EncodeRequest({}, /*fingerprint=*/false);
  indication[1] = 0x11;
  client->Send(indication, to);

  // The server reads its socket in order on one thread and counts a batch before answering it, so
  // once this answer arrives every datagram above has been counted.
  stun::BindingResponse response;
  ASSERT_EQ(Query(*client, to, rng, &response), stun::ParseResult::kOk);
  EXPECT_EQ(response.mapped_address, client->local());
  EXPECT_EQ(server->counters().malformed.load(), garbage.size());
  EXPECT_EQ(server->counters().ignored.load(), 1u);
  EXPECT_EQ(server->counters().requests.load(), 1u);
  EXPECT_TRUE(CounterReaches(server->counters().responses, 1));
}

TEST(StunServerTest, UnknownRequiredAttributeGets420) {
  std::unique_ptr<StunServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<UdpClient> client = UdpClient::Open(Loopback4());
  ASSERT_NE(client, nullptr);

  // A Binding request with attribute 0x0030 (comprehension-required, unknown here), no FINGERPRINT.
  const stun::TransactionId id = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2};
  std::vector<uint8_t> request = EncodeRequest(id);
  request.resize(stun::kHeaderSize);
  request.insert(request.end(), {0x00, 0x30, 0x00, 0x04, 1, 2, 3, 4});
  request[3] = 8;
  client->Send(request, Endpoint(Loopback4(), server->port()));
  std::optional<std::vector<uint8_t>> answer = client->Receive();
  ASSERT_TRUE(answer.has_value());
  stun::BindingResponse response;
  ASSERT_EQ(stun::ParseBindingResponse(stun::Bytes(answer->data(), answer->size()), id, &response),
            stun::ParseResult::kOk);
  EXPECT_EQ(response.message_class, stun::MessageClass::kErrorResponse);
  EXPECT_EQ(response.error_code, 420);
  EXPECT_TRUE(CounterReaches(server->counters().error_responses, 1));
  EXPECT_EQ(server->counters().responses.load(), 0u);
}

TEST(StunServerTest, BusyPortNamesTheFlag) {
  std::unique_ptr<StunServer> first = StartServer();
  ASSERT_NE(first, nullptr);
  StunServer::Options options;
  options.port = first->port();
  absl::StatusOr<std::unique_ptr<StunServer>> second = StunServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("--stun-port"));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(std::to_string(first->port())));
}

TEST(StunServerTest, StartsAndStopsRepeatedly) {
  // The destructor must wake the thread wherever it waits; a hang here fails by the test timeout.
  for (int i = 0; i < 50; ++i) {
    std::unique_ptr<StunServer> server = StartServer();
    ASSERT_NE(server, nullptr);
  }
}

}  // namespace
}  // namespace tunnelmesh
