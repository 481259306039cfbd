// The coordinator's gRPC front end: TLS with the coordinator's own CA, session-token
// authentication, and translation between gRPC and the Coordinator core. The unary calls run on
// gRPC's sync thread pool; Watch streams run on the callback API and hold no thread: an update is
// written when the coordinator queues it (no polling), one write in flight per stream. Other
// services may share the server (the central DNS server's DnsService).
//
// Descriptor exhaustion: gRPC 1.51 (Debian 12) stops accepting on a listener for good once accept4
// fails with EMFILE (the listening socket stays open, connections queue in its backlog and are
// never accepted). 1.51 has no cap on incoming connections
// (GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS came later), so the server bounds what 1.51 offers
// (handshake timeout, idle connections, streams per connection, sync threads; see Build) and a
// listener watchdog recovers the port: every few seconds it opens a TLS connection to the port;
// after consecutive failures, once descriptors are available again, it rebuilds the gRPC server on
// the same port (open streams end; agents re-register and watch again within a second, as after a
// coordinator restart).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/coordinator.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace tunnelmesh {

// The listener watchdog's decision, from one probe at a time (no I/O, no clock: the caller probes
// on its own schedule). `failures_before_rebuild` probes in a row must fail before a rebuild, so a
// probe that is merely slow on a loaded machine costs nothing; while descriptors are still
// exhausted a rebuild would fail too, so it waits. Not thread-safe (the watchdog thread owns it).
class ListenerWatchdog {
 public:
  enum class Verdict {
    kHealthy,             // The probe connected.
    kFailing,             // It did not, fewer than failures_before_rebuild times in a row.
    kWaitForDescriptors,  // Enough failures, but descriptors are still exhausted.
    kRebuild,             // Rebuild the server now (the failure count starts again).
  };
  explicit ListenerWatchdog(int failures_before_rebuild = 3)
      : failures_before_rebuild_(failures_before_rebuild) {}
  Verdict Observe(bool accepting, bool descriptors_available);
  int consecutive_failures() const { return failures_; }

 private:
  const int failures_before_rebuild_;
  int failures_ = 0;
};

struct ListenerWatchdogCounters {
  std::atomic<uint64_t> checks{0};            // Probes made.
  std::atomic<uint64_t> failed_checks{0};     // Probes that did not connect.
  std::atomic<uint64_t> descriptor_waits{0};  // Rebuilds put off: descriptors exhausted.
  std::atomic<uint64_t> restarts{0};          // Servers rebuilt on the same port.
  std::atomic<uint64_t> restart_failures{0};  // Rebuilds that could not listen (retried later).
};

class CoordinatorServer {
 public:
  // Listens on address:port ("0.0.0.0", "[::]"). Port 0 picks a free one (see port()). A busy port
  // is an error naming --grpc-port. `more_services` are served beside the Coordinator service, on
  // the same port and TLS, with their own authentication (or none); they must outlive the server.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      Coordinator* coordinator, const TlsIdentity& tls, const std::string& address, int port,
      const std::vector<grpc::Service*>& more_services = {});
  ~CoordinatorServer();
  // The port, the same across rebuilds.
  int port() const { return port_; }
  // Stops the watchdog, ends every open stream and stops accepting calls. Call from the thread
  // that owns the server (the one that started it), once.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_, server_mu_);

  struct WatchdogOptions {
    absl::Duration interval = absl::Seconds(2);
    absl::Duration probe_timeout = absl::Seconds(2);
    int failures_before_rebuild = 3;
    // Descriptors that must be free below the soft limit before a rebuild is tried.
    size_t spare_descriptors = 32;
    // Tests inject these; the defaults are ProbeAccepting and lib/base's DescriptorsAvailable.
    std::function<bool(absl::Duration timeout)> probe;
    std::function<bool()> descriptors_available;
  };
  // Starts the listener watchdog on its own thread (one per server; Shutdown stops it). The thread
  // owns the probe and the ListenerWatchdog; it calls Rebuild.
  void StartWatchdog(WatchdogOptions options) ABSL_LOCKS_EXCLUDED(mu_);
  const ListenerWatchdogCounters& watchdog_counters() const { return watchdog_counters_; }

  // Whether the port completes a TLS handshake (and HTTP/2 setup) within `timeout`: a fresh
  // channel to this server's own port, verified against its CA, sharing no connection with any
  // other channel. Blocks up to `timeout`; thread-safe.
  bool ProbeAccepting(absl::Duration timeout) const;
  // Shuts the gRPC server down (its streams end with CANCELLED; the coordinator's state is
  // untouched) and builds a new one on the same port and services. kUnavailable when the port
  // cannot be listened on again (the watchdog retries). Blocks up to about a second (the old
  // server's calls are given that long).
  [[nodiscard]] absl::Status Rebuild() ABSL_LOCKS_EXCLUDED(server_mu_);

 private:
  class Service;
  CoordinatorServer() = default;
  // Builds and starts server_ on `port` (0: any); the port in *bound (0 on failure).
  void BuildLocked(int port, int* bound) ABSL_EXCLUSIVE_LOCKS_REQUIRED(server_mu_);
  void WatchdogLoop(WatchdogOptions options) ABSL_LOCKS_EXCLUDED(mu_);

  Coordinator* coordinator_ = nullptr;
  TlsIdentity tls_;
  std::string host_;          // Bracketed when IPv6.
  std::string probe_target_;  // host:port the watchdog connects to (loopback for a wildcard).
  std::vector<grpc::Service*> more_services_;
  std::unique_ptr<Service> service_;  // Outlives every server built.
  int port_ = 0;
  // Held across a rebuild (which blocks up to a second); taken only by Rebuild and Shutdown, which
  // stops the watchdog first, so nobody else ever waits for it.
  absl::Mutex server_mu_;
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(server_mu_);
  // The watchdog thread's stop flag; never held while probing or rebuilding.
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;  // Started and joined by the owner's thread.
  ListenerWatchdogCounters watchdog_counters_;
};

}  // namespace tunnelmesh
