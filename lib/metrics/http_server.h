// MetricsServer: the HTTP listener of /metrics (http.h has the protocol). One thread owns the
// listening socket and every connection and runs a poll loop over them; it never blocks on one
// client: connections are read and written without blocking, each has a deadline to send its
// request head and one to take its answer, and at most `max_connections` are open at once (one
// more is answered 503 and closed). Each answer closes its connection.
//
// The body comes from a Render callback that runs on the server's thread, once per GET or HEAD
// of /metrics (nullopt: 503); it must not take long (the agent's builds a snapshot on its control
// thread with a timeout, the operator's reads atomics).
//
// Thread-safety: Start and the destructor from the owner's thread; endpoint() and the counters
// from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"

namespace tunnelmesh::metrics {

struct ServerLimits {
  size_t max_connections = 16;
  size_t max_request_head = 8192;
  // From accept until the request head is complete.
  std::chrono::milliseconds read_timeout{5000};
  // From the head until the answer is written.
  std::chrono::milliseconds write_timeout{10000};
};

// "HOST:PORT" with HOST an IPv4 address or a bracketed IPv6 one, PORT 0 (a free port) to 65535.
// Errors name `flag`.
[[nodiscard]] absl::StatusOr<Endpoint> ParseListenAddress(std::string_view text,
                                                          std::string_view flag);

class MetricsServer {
 public:
  // nullopt answers 503.
  using Render = std::function<std::optional<std::string>()>;

  // Listens on `address` (port 0: a free one). A port in use is kAlreadyExists, an address that is
  // not local kFailedPrecondition; both messages name `flag` and how to turn metrics off
  // (`disable_flag`, when not empty).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const Endpoint& address, std::string_view flag, std::string_view disable_flag, Render render,
      ServerLimits limits = {});
  ~MetricsServer();  // Stops the thread and closes every socket.
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Where it listens, with the port the kernel chose for port 0.
  const Endpoint& endpoint() const { return endpoint_; }

  // Requests answered 200; requests answered with a client error (400, 404, 405, 431); scrapes
  // answered 503 because Render gave nothing; connections refused because `max_connections` were
  // open; connections closed at a deadline.
  uint64_t scrapes() const { return scrapes_.load(std::memory_order_relaxed); }
  uint64_t bad_requests() const { return bad_requests_.load(std::memory_order_relaxed); }
  uint64_t unavailable() const { return unavailable_.load(std::memory_order_relaxed); }
  uint64_t refused_connections() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t timeouts() const { return timeouts_.load(std::memory_order_relaxed); }

 private:
  MetricsServer(int listen_fd, int stop_fd, Endpoint endpoint, Render render, ServerLimits limits);
  void Serve();

  const int listen_fd_;
  const int stop_fd_;
  const Endpoint endpoint_;
  const Render render_;
  const ServerLimits limits_;
  std::atomic<uint64_t> scrapes_{0};
  std::atomic<uint64_t> bad_requests_{0};
  std::atomic<uint64_t> unavailable_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> timeouts_{0};
  std::thread thread_;
};

}  // namespace tunnelmesh::metrics
