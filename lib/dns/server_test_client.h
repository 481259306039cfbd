// For tests of DNS servers (lib/dns/server_test.cc, operator/dns): asks a server listening on an
// IPv4 address over real UDP and TCP sockets, each answer awaited with a deadline (5 s), so a
// server that never answers fails the test instead of hanging it. Header-only; tests only.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "lib/dns/message.h"
#include "lib/net/ip.h"

namespace tunnelmesh::dns::testing {

// A standard query (RD set) with one question of class IN.
inline std::vector<uint8_t> QueryBytes(uint16_t id, const std::string& name,
                                       uint16_t type = kTypeA) {
  Message q;
  q.header.id = id;
  q.header.rd = true;
  q.questions.push_back({name, type, kClassIn});
  return Encode(q).value();
}

inline sockaddr_in SockaddrOf(const Endpoint& e) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(e.port());
  std::memcpy(&a.sin_addr, e.address().bytes(), 4);
  return a;
}

// Waits up to 5 s for a datagram on `fd`; `from` (if not null) gets its source.
inline std::optional<std::vector<uint8_t>> ReceiveDatagram(int fd, sockaddr_in* from = nullptr) {
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

// The decoded answer to `query` over UDP, or an empty Message when none came or it did not decode.
inline Message AskUdp(const Endpoint& server, const std::vector<uint8_t>& query) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  const sockaddr_in to = SockaddrOf(server);
  sendto(fd, query.data(), query.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  std::optional<std::vector<uint8_t>> reply = ReceiveDatagram(fd);
  close(fd);
  if (!reply.has_value()) return Message{};
  return Decode(*reply).value_or(Message{});
}

// The same over a new TCP connection (RFC 7766: two-byte length prefixes).
inline Message AskTcp(const Endpoint& server, const std::vector<uint8_t>& query) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in to = SockaddrOf(server);
  Message answer;
  std::vector<uint8_t> out = {static_cast<uint8_t>(query.size() >> 8),
                              static_cast<uint8_t>(query.size())};
  out.insert(out.end(), query.begin(), query.end());
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
      write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size())) {
    std::vector<uint8_t> in;
    for (;;) {
      if (in.size() >= 2 && in.size() >= 2 + (size_t{in[0]} << 8 | in[1])) {
        const size_t length = size_t{in[0]} << 8 | in[1];
        answer = Decode(absl::MakeConstSpan(in.data() + 2, length)).value_or(Message{});
        break;
      }
      pollfd p{fd, POLLIN, 0};
      uint8_t chunk[4096];
      if (poll(&p, 1, 5000) != 1) break;
      const ssize_t n = read(fd, chunk, sizeof chunk);
      if (n <= 0) break;
      in.insert(in.end(), chunk, chunk + n);
    }
  }
  close(fd);
  return answer;
}

}  // namespace tunnelmesh::dns::testing
