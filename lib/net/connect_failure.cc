#include "lib/net/connect_failure.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"

namespace tunnelmesh {

std::string ConnectErrnoWords(int error) {
  switch (error) {
    case ECONNREFUSED:
      return "connection refused";
    case ETIMEDOUT:
    case EINPROGRESS:
    case EAGAIN:
      return "timed out";
    case EHOSTUNREACH:
      return "no route to host";
    case ENETUNREACH:
      return "network unreachable";
    case ECONNRESET:
      return "connection reset";
    default:
      return absl::AsciiStrToLower(std::strerror(error));
  }
}

std::optional<std::string> ConnectFailureFromText(absl::string_view text) {
  struct Pattern {
    std::string_view needle;
    std::string_view words;
  };
  // Most specific first: gRPC's text may carry a resolver failure and a deadline together.
  static constexpr Pattern kPatterns[] = {
      {"DNS resolution failed", "the name did not resolve"},
      {"Name or service not known", "the name did not resolve"},
      {"Temporary failure in name resolution", "the name did not resolve"},
      {"cannot resolve", "the name did not resolve"},
      {"Connection refused", "connection refused"},
      {"No route to host", "no route to host"},
      {"Network is unreachable", "network unreachable"},
      {"Connection timed out", "timed out"},
      {"Deadline Exceeded", "timed out"},
      {"Timeout occurred", "timed out"},
      {"Connection reset", "connection reset"},
  };
  const std::string lower = absl::AsciiStrToLower(std::string(text));
  for (const Pattern& p : kPatterns) {
    if (absl::StrContains(lower, absl::AsciiStrToLower(std::string(p.needle))))
      return std::string(p.words);
  }
  return std::nullopt;
}

std::optional<std::string> ProbeTcpConnect(const std::string& host, uint16_t port,
                                           absl::Duration timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    return "the name did not resolve";
  }
  std::string words = "timed out";
  const absl::Time deadline = absl::Now() + timeout;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int error = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) error = errno;
    if (error == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int64_t wait_ms =
          std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (poll(&p, 1, static_cast<int>(wait_ms)) == 1) {
        socklen_t len = sizeof(error);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
      } else {
        error = ETIMEDOUT;
      }
    }
    close(fd);
    if (error == 0) {
      freeaddrinfo(found);
      return std::nullopt;
    }
    words = ConnectErrnoWords(error);
  }
  freeaddrinfo(found);
  return words;
}

}  // namespace tunnelmesh
