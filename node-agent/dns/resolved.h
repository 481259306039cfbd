// Split DNS through systemd-resolved: where resolved serves this host, the agent registers the
// mesh domain on its TUN interface, as `resolvectl dns`/`domain` would, so that `bob.mesh` (and
// the PTR names of mesh IPs) go to the agent's own DNS server while every other name keeps going
// where it went before; on exit it reverts the link. Where resolved does not run here, the agent
// says how to point the host's resolver at it instead (docs/dns.md "Pointing a host at it").
//
// What is registered on the link (ResolvedLink, ResolvectlCommands):
// - DNS server: the agent's server on its own mesh IPs (IPv4 first), the address the interface
//   itself holds: resolved sends a link's queries out of that link (bound to its ifindex) and the
//   kernel delivers them locally. Checked against resolved 252 (Debian 12), which also reaches a
//   loopback server such as --dns-listen's 127.0.0.100 registered on the link, because it sends
//   to loopback servers without binding to the link; the mesh IP needs no such special case.
// - Routing-only domains (`~mesh`, and the reverse zones of the mesh ranges such as
//   `~99.10.in-addr.arpa`), default route off: only those names go to the agent.
// - LLMNR off on the link: single-label names would otherwise be multicast into the tunnel.
// - DNSSEC and DNS-over-TLS off for the link: the mesh zone is unsigned and not delegated from the
//   root, and the agent speaks plain DNS; with DNSSEC=yes in resolved.conf every mesh name fails
//   ("DNSSEC validation failed: no-signature") unless the link says no.
// A restarted resolved forgets link settings: the registrar notices that its pid changed and
// registers again.
//
// How: `resolvectl`, a child process (no shell) with a timeout, rather than D-Bus calls: the agent
// links no D-Bus library (Debian's libsystemd-dev would be a new dependency for four method
// calls), and the commands it runs are exactly the ones a user can read in the log and run by
// hand when they fail. resolvectl missing or failing is a warning naming those commands, never
// fatal.
//
// Whether resolved runs (DetectResolved): a connect() to its varlink socket
// /run/systemd/resolve/io.systemd.Resolve, which systemd-resolved (v245 and later; Debian 12 has
// 252) creates and listens on itself. A connection that succeeds means it runs now; a file left
// behind by a stopped resolved refuses the connection; the file /run/systemd/resolve/
// stub-resolv.conf and the unit's state (systemctl) both outlive the daemon or need a D-Bus
// client. The socket's peer credentials name resolved's pid, and its network namespace must be
// ours: a link is named by its ifindex, so an agent in a network namespace (the demo, the e2e
// tests) must not configure the host's resolved, whose link with that ifindex is another one.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

inline constexpr char kResolvedVarlinkSocket[] = "/run/systemd/resolve/io.systemd.Resolve";

// ---------------------------------------------------------------------------------------------
// What to register, and the resolvectl command lines for it.

struct ResolvedLink {
  std::string interface_name;
  // The link's DNS servers: the agent's server on its mesh IPs (IPv4 first).
  std::vector<Endpoint> servers;
  // Routing-only domains, without the leading '~': the mesh domain, then the reverse zones.
  std::vector<std::string> domains;

  bool operator==(const ResolvedLink&) const = default;
};

// The link for the agent on `interface_name` serving `domain` (empty: "mesh") on `servers`:
// the mesh ranges' reverse zones are added (whole octets or nibbles, as the zone serves them); a
// range shorter than /8 (IPv4) or /4 (IPv6) would claim a whole top-level reverse tree and is
// left out.
ResolvedLink MakeResolvedLink(const std::string& interface_name, const std::string& domain,
                              const std::vector<Prefix>& ranges, std::vector<Endpoint> servers);

// The reverse zone a mesh range's PTR names are in ("99.10.in-addr.arpa" for 10.99.0.0/16 and
// 10.99.0.0/20), or "" for a range too short to have one of its own (see above).
std::string ReverseZoneOf(const Prefix& range);

// The resolvectl command lines that register `link`, in order: dns, domain, default-route, llmnr,
// dnssec, dnsovertls. Each replaces the link's previous value, so running them again is harmless.
std::vector<std::vector<std::string>> ResolvectlCommands(const ResolvedLink& link);
// `resolvectl revert IFACE`: drops everything set on the link.
std::vector<std::string> ResolvectlRevertCommand(const std::string& interface_name);
// `argv` as one shell command line, quoting what a shell would change ('~mesh').
std::string ShellCommandLine(const std::vector<std::string>& argv);

// ---------------------------------------------------------------------------------------------
// Is systemd-resolved serving this network namespace?

enum class ResolvedPresence {
  kRunning,           // Listening, in our network namespace: register with it.
  kNotRunning,        // Nothing listens on its socket.
  kOtherNamespace,    // It runs, in another network namespace (an agent in a netns).
  kUnknownNamespace,  // It runs, but its namespace cannot be compared (pid or /proc not visible).
};

struct ResolvedDetection {
  ResolvedPresence presence = ResolvedPresence::kNotRunning;
  std::string detail;  // Why, for the log ("connect /run/...: No such file or directory").
  pid_t pid = 0;       // resolved's pid when known.
};

// Connects to `socket_path` (no I/O on the connection) and compares the listener's network
// namespace with ours. Any thread; returns within a connect() on a local socket.
ResolvedDetection DetectResolved(const std::string& socket_path = kResolvedVarlinkSocket);

// What to tell the user when the agent does not register with resolved itself (`detection` says
// why): the three ways docs/dns.md "Pointing a host at it" lists, with this agent's addresses:
// resolved's commands for `link`, /etc/resolv.conf with `loopback` (the --dns-listen server),
// /etc/netns/NAME/resolv.conf. `upstream`: --dns-upstream, if given. One log line each.
std::vector<std::string> HostResolverAdvice(const ResolvedDetection& detection,
                                            const ResolvedLink& link, const Endpoint& loopback,
                                            const std::optional<Endpoint>& upstream);

// ---------------------------------------------------------------------------------------------
// Running a program.

struct CommandResult {
  int exit_code = 0;   // 128 + N when killed by signal N.
  std::string output;  // stdout and stderr together, at most kMaxOutput bytes (the rest dropped).
};

class CommandRunner {
 public:
  static constexpr size_t kMaxOutput = 4096;
  virtual ~CommandRunner() = default;
  // Runs argv[0] (looked up in PATH) with argv, no shell, stdin from /dev/null. NotFound when the
  // program is not in PATH, DeadlineExceeded when it ran longer than `timeout` (it is killed),
  // Internal when it could not be started; a non-zero exit is a result, not an error.
  [[nodiscard]] virtual absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv,
                                                          std::chrono::milliseconds timeout) = 0;
};

// The real one: posix_spawnp with the default signal mask and dispositions (the agent blocks
// SIGINT and SIGTERM in every thread; a child must not inherit that), a pidfd and poll for the
// timeout. Safe from any thread; each call waits for its own child only.
class SubprocessRunner final : public CommandRunner {
 public:
  absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv,
                                    std::chrono::milliseconds timeout) override;
};

// ---------------------------------------------------------------------------------------------
// The registrar: applies the latest ResolvedLink asked for, off the caller's thread.

class ResolvedRegistrar {
 public:
  struct Options {
    // Per resolvectl run; Stop() waits at most one of these for a command in progress, then one
    // more for the revert.
    std::chrono::milliseconds command_timeout{3000};
    // After a failed registration (resolved may not know a brand-new link yet: "Link tm0 not
    // known"), tries again after each of these delays; then warns with the commands to run by
    // hand and waits for the next change.
    std::vector<std::chrono::milliseconds> retry_delays{
        std::chrono::milliseconds(200), std::chrono::milliseconds(500), std::chrono::seconds(1),
        std::chrono::seconds(2)};
    // resolved's pid now, 0 when it does not run here (DetectResolved); called on the thread
    // every `recheck_interval` after a registration or a give-up. A new pid (resolved restarted
    // and forgot the link) registers again. Empty: no rechecks.
    std::function<pid_t()> resolved_pid;
    std::chrono::milliseconds recheck_interval{std::chrono::seconds(5)};
  };

  // Starts the thread ("tm-resolved"); `runner` runs resolvectl.
  ResolvedRegistrar(std::unique_ptr<CommandRunner> runner, Options options);
  explicit ResolvedRegistrar(std::unique_ptr<CommandRunner> runner)
      : ResolvedRegistrar(std::move(runner), Options()) {}
  ~ResolvedRegistrar();  // Stop().
  ResolvedRegistrar(const ResolvedRegistrar&) = delete;
  ResolvedRegistrar& operator=(const ResolvedRegistrar&) = delete;

  // Any thread; never waits for a child process. Records `link` as the registration wanted; the
  // thread applies the latest one (requests in between coalesce) unless it is the one applied
  // already.
  void Register(ResolvedLink link);

  // Blocking, once (later calls return at once): stops the thread (a command in progress runs to
  // its end or timeout) and, when a registration was attempted, runs `resolvectl revert`. Call it
  // before the interface goes away.
  void Stop();

  // Counters (any thread): registrations applied, attempts that failed, reverts that succeeded,
  // restarts of resolved seen.
  uint64_t registered() const { return registered_.load(std::memory_order_relaxed); }
  uint64_t restarts_seen() const { return restarts_seen_.load(std::memory_order_relaxed); }
  uint64_t failed() const { return failed_.load(std::memory_order_relaxed); }
  uint64_t reverted() const { return reverted_.load(std::memory_order_relaxed); }

 private:
  void Loop();
  // A wanted link that is neither applied nor given up on.
  bool Pending() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every recheck_interval: forgets the applied (or given up) link when resolved's pid changed.
  void Recheck();
  // Runs the commands for `link` in order; the first failure stops it (message names the command).
  absl::Status Apply(const ResolvedLink& link);
  absl::Status RunCommand(const std::vector<std::string>& argv);

  const std::unique_ptr<CommandRunner> runner_;
  const Options options_;

  absl::Mutex mu_;
  std::optional<ResolvedLink> wanted_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Written by the thread only, read under mu_ by Pending: what was last applied, and the link
  // given up on after its retries (tried again only once another one is asked for).
  std::optional<ResolvedLink> applied_ ABSL_GUARDED_BY(mu_);
  std::optional<ResolvedLink> given_up_ ABSL_GUARDED_BY(mu_);
  size_t attempt_ = 0;      // The thread's: retries used for the failing link.
  pid_t resolved_pid_ = 0;  // The thread's: resolved's pid when the last attempt began.
  // Set by the thread, read by Stop after joining it: an interface name was touched.
  std::string touched_interface_;
  bool stopped_ = false;  // Stop's own (the calling thread's).

  std::atomic<uint64_t> registered_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> reverted_{0};
  std::atomic<uint64_t> restarts_seen_{0};
  std::thread thread_;
};

}  // namespace tunnelmesh
