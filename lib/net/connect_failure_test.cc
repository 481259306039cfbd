#include "lib/net/connect_failure.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

TEST(ConnectFailureTest, NamesTheCauseInGrpcAndLibraryText) {
  EXPECT_EQ(ConnectFailureFromText("failed to connect to all addresses; last error: UNKNOWN: "
                                   "ipv4:198.51.100.1:7700: Failed to connect to remote host: "
                                   "Connection refused"),
            "connection refused");
  EXPECT_EQ(ConnectFailureFromText("DNS resolution failed for nope.invalid:7700: C-ares status "
                                   "is not ARES_SUCCESS"),
            "the name did not resolve");
  EXPECT_EQ(ConnectFailureFromText("Deadline Exceeded"), "timed out");
  EXPECT_EQ(ConnectFailureFromText("connect: No route to host"), "no route to host");
  EXPECT_EQ(ConnectFailureFromText("the join token is not valid"), std::nullopt);
  EXPECT_EQ(ConnectFailureFromText("set_fail_handler: 2: Underlying Transport Error"),
            std::nullopt);
}

TEST(ConnectFailureTest, ErrnoWords) {
  EXPECT_EQ(ConnectErrnoWords(ECONNREFUSED), "connection refused");
  EXPECT_EQ(ConnectErrnoWords(ETIMEDOUT), "timed out");
  EXPECT_EQ(ConnectErrnoWords(EHOSTUNREACH), "no route to host");
}

// A port that was just bound and closed on loopback refuses; a listening one connects.
TEST(ConnectFailureTest, ProbeTellsRefusedFromListening) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const uint16_t port = ntohs(addr.sin_port);
  ASSERT_EQ(listen(fd, 4), 0);
  EXPECT_EQ(ProbeTcpConnect("127.0.0.1", port, absl::Seconds(2)), std::nullopt);
  close(fd);
  EXPECT_EQ(ProbeTcpConnect("127.0.0.1", port, absl::Seconds(2)), "connection refused");
  EXPECT_EQ(ProbeTcpConnect("name.that.does.not.resolve.invalid", port, absl::Seconds(2)),
            "the name did not resolve");
}

}  // namespace
}  // namespace tunnelmesh
