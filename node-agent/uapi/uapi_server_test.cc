#include "node-agent/uapi/uapi_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace tunnelmesh::uapi {
namespace {

class UapiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/uapi_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    base_ = pattern;
    directory_ = base_ + "/wireguard";
  }
  void TearDown() override { std::filesystem::remove_all(base_); }

  std::unique_ptr<UapiServer> Listen() {
    absl::StatusOr<std::unique_ptr<UapiServer>> server =
        UapiServer::Listen(directory_, "wgt0", [this](Request request) {
          ++requests_;
          return request.kind == Request::Kind::kGet ? std::string("listen_port=7\nerrno=0\n\n")
                                                     : FormatErrnoReply(0);
        });
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }

  // Sends `bytes`, half-closes, returns everything the server answered.
  std::string Exchange(const std::string& bytes) {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string path = SocketPath(directory_, "wgt0");
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    shutdown(fd, SHUT_WR);
    std::string reply;
    char buffer[1024];
    ssize_t n;
    while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) reply.append(buffer, n);
    close(fd);
    return reply;
  }

  std::string base_;
  std::string directory_;
  std::atomic<int> requests_{0};
};

TEST_F(UapiServerTest, AnswersGetAndSetAndRemovesTheSocket) {
  std::unique_ptr<UapiServer> server = Listen();
  ASSERT_NE(server, nullptr);
  struct stat info {};
  ASSERT_EQ(stat(server->path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(directory_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0755u);
  EXPECT_EQ(Exchange("get=1\n\n"), "listen_port=7\nerrno=0\n\n");
  // Two requests on one connection, as wireguard-go allows.
  EXPECT_EQ(Exchange("set=1\nlisten_port=1\n\nget=1\n\n"), "errno=0\n\nlisten_port=7\nerrno=0\n\n");
  EXPECT_EQ(requests_, 3);
  const std::string path = server->path();
  server.reset();
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(UapiServerTest, MalformedRequestsGetAnErrnoAndTheServerGoesOn) {
  std::unique_ptr<UapiServer> server = Listen();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Exchange("hello\n\n"), "errno=-22\n\n");
  EXPECT_EQ(Exchange("set=1\npublic_key=zz\n\n"), "errno=-22\n\n");
  EXPECT_EQ(Exchange("set=1\nendpoint=" + std::string(10000, 'x')), "errno=-22\n\n");
  EXPECT_EQ(Exchange(std::string("\0\0\0\n\n", 5)), "errno=-22\n\n");
  EXPECT_EQ(Exchange(""), "");  // `wg` probes with an empty connection.
  EXPECT_EQ(requests_, 0);
  EXPECT_EQ(Exchange("get=1\n\n"), "listen_port=7\nerrno=0\n\n");
}

TEST_F(UapiServerTest, LiveSocketIsAnErrorStaleOneIsReplaced) {
  std::unique_ptr<UapiServer> server = Listen();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<UapiServer>> second =
      UapiServer::Listen(directory_, "wgt0", [](Request) { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(second.status().message(), "another process (wireguard-go or an agent) serves " +
                                           server->path() +
                                           ": stop it or pick another --interface");
  server.reset();
  // A killed process leaves its socket file behind: bind one and never listen.
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string path = SocketPath(directory_, "wgt0");
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  close(fd);
  ASSERT_TRUE(std::filesystem::exists(path));
  server = Listen();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Exchange("get=1\n\n"), "listen_port=7\nerrno=0\n\n");
}

}  // namespace
}  // namespace tunnelmesh::uapi
