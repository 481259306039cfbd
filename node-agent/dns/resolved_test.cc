#include "node-agent/dns/resolved.h"

#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>

#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Argv = std::vector<std::string>;

Prefix P(const char* text) { return *Prefix::Parse(text); }
Endpoint E(const char* text) { return *Endpoint::Parse(text); }

// Polls `condition` until it holds or 10 s pass.
bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::string TempPath(const char* name) {
  char tmpl[] = "/tmp/tm-resolved-test-XXXXXX";
  return std::string(mkdtemp(tmpl)) + "/" + name;
}

// A unix socket bound at `path`, listening when `listen_too`.
int BindUnix(const std::string& path, bool listen_too) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return -1;
  if (listen_too && listen(fd, 4) != 0) return -1;
  return fd;
}

TEST(ReverseZoneTest, WholeOctetsAndNibblesOfTheRange) {
  EXPECT_EQ(ReverseZoneOf(P("10.99.0.0/16")), "99.10.in-addr.arpa");
  EXPECT_EQ(ReverseZoneOf(P("10.99.0.0/20")), "99.10.in-addr.arpa");
  EXPECT_EQ(ReverseZoneOf(P("100.64.7.0/24")), "7.64.100.in-addr.arpa");
  EXPECT_EQ(ReverseZoneOf(P("10.0.0.0/8")), "10.in-addr.arpa");
  EXPECT_EQ(ReverseZoneOf(P("10.0.0.0/7")), "");
  EXPECT_EQ(ReverseZoneOf(P("fd99:99::/48")), "0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa");
  EXPECT_EQ(ReverseZoneOf(P("fd00::/8")), "d.f.ip6.arpa");
  EXPECT_EQ(ReverseZoneOf(P("::/0")), "");
}

TEST(ResolvectlCommandsTest, RegisterTheDomainAndReverseZonesOnTheLink) {
  const ResolvedLink link =
      MakeResolvedLink("tm0", "", {P("10.99.0.0/16"), P("10.99.128.0/17"), P("fd99:99::/48")},
                       {E("[fd99:99::2]:53"), E("10.99.0.2:53")});
  EXPECT_THAT(link.servers, ElementsAre(E("10.99.0.2:53"), E("[fd99:99::2]:53")));
  EXPECT_THAT(link.domains,
              ElementsAre("mesh", "99.10.in-addr.arpa", "0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa"));
  EXPECT_THAT(ResolvectlCommands(link),
              ElementsAre(Argv{"resolvectl", "dns", "tm0", "10.99.0.2", "fd99:99::2"},
                          Argv{"resolvectl", "domain", "tm0", "~mesh", "~99.10.in-addr.arpa",
                               "~0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa"},
                          Argv{"resolvectl", "default-route", "tm0", "false"},
                          Argv{"resolvectl", "llmnr", "tm0", "no"},
                          Argv{"resolvectl", "dnssec", "tm0", "no"},
                          Argv{"resolvectl", "dnsovertls", "tm0", "no"}));
  EXPECT_THAT(ResolvectlRevertCommand("tm0"), ElementsAre("resolvectl", "revert", "tm0"));

  // Another port is part of the server argument; a custom domain is used as it is.
  const ResolvedLink other =
      MakeResolvedLink("tm7", "corp.example", {}, {E("10.99.0.2:5353"), E("[fd99:99::2]:5353")});
  EXPECT_THAT(ResolvectlCommands(other)[0],
              ElementsAre("resolvectl", "dns", "tm7", "10.99.0.2:5353", "[fd99:99::2]:5353"));
  EXPECT_THAT(ResolvectlCommands(other)[1],
              ElementsAre("resolvectl", "domain", "tm7", "~corp.example"));
}

TEST(ResolvectlCommandsTest, ShellLinesQuoteWhatAShellWouldChange) {
  EXPECT_EQ(ShellCommandLine({"resolvectl", "domain", "tm0", "~mesh", "~99.10.in-addr.arpa"}),
            "resolvectl domain tm0 '~mesh' '~99.10.in-addr.arpa'");
  EXPECT_EQ(ShellCommandLine({"resolvectl", "dns", "tm0", "[fd99::2]:5353"}),
            "resolvectl dns tm0 [fd99::2]:5353");
  EXPECT_EQ(ShellCommandLine({"echo", "it's", ""}), "echo 'it'\\''s' ''");
}

TEST(HostResolverAdviceTest, TheThreeWaysWithThisAgentsAddresses) {
  ResolvedDetection detection;
  detection.detail = "connect /run/systemd/resolve/io.systemd.Resolve: No such file or directory";
  const ResolvedLink link =
      MakeResolvedLink("tm0", "mesh", {P("10.99.0.0/16")}, {E("10.99.0.2:53")});
  std::vector<std::string> lines =
      HostResolverAdvice(detection, link, E("127.0.0.100:53"), std::nullopt);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0],
            "systemd-resolved is not running (connect /run/systemd/resolve/io.systemd.Resolve: No "
            "such file or directory): point this host's resolver at the mesh DNS server "
            "(127.0.0.100) to resolve NAME.mesh in one of these ways:");
  EXPECT_THAT(lines[1], HasSubstr("resolvectl dns tm0 10.99.0.2; resolvectl domain tm0 '~mesh' "
                                  "'~99.10.in-addr.arpa'; resolvectl default-route tm0 false"));
  EXPECT_THAT(lines[2], HasSubstr("`nameserver 127.0.0.100` the first"));
  EXPECT_THAT(lines[2], HasSubstr("restart the agent with --dns-upstream"));
  EXPECT_THAT(lines[3], HasSubstr("`nameserver 127.0.0.100` in /etc/netns/NAME/resolv.conf"));

  detection.presence = ResolvedPresence::kOtherNamespace;
  detection.detail = "pid 42";
  lines = HostResolverAdvice(detection, link, E("127.0.0.101:5353"), E("192.0.2.1:53"));
  EXPECT_THAT(lines[0], HasSubstr("runs in another network namespace (pid 42), whose links"));
  EXPECT_THAT(lines[0], HasSubstr("(127.0.0.101:5353)"));
  EXPECT_THAT(lines[2], HasSubstr("go on to --dns-upstream 192.0.2.1:53"));
  EXPECT_THAT(lines[2], HasSubstr("needs --dns-port 53"));
}

TEST(DetectResolvedTest, NothingListeningIsNotRunning) {
  const std::string missing = TempPath("absent");
  ResolvedDetection d = DetectResolved(missing);
  EXPECT_EQ(d.presence, ResolvedPresence::kNotRunning);
  EXPECT_THAT(d.detail, HasSubstr(missing));
  EXPECT_THAT(d.detail, HasSubstr("No such file"));

  // A socket file left behind by a stopped daemon refuses connections.
  const std::string stale = TempPath("stale");
  const int fd = BindUnix(stale, /*listen_too=*/false);
  ASSERT_GE(fd, 0);
  d = DetectResolved(stale);
  EXPECT_EQ(d.presence, ResolvedPresence::kNotRunning);
  EXPECT_THAT(d.detail, HasSubstr("refused"));
  close(fd);
}

TEST(DetectResolvedTest, AListenerInThisNetworkNamespaceIsRunning) {
  const std::string path = TempPath("io.systemd.Resolve");
  const int fd = BindUnix(path, /*listen_too=*/true);
  ASSERT_GE(fd, 0);
  const ResolvedDetection d = DetectResolved(path);
  EXPECT_EQ(d.presence, ResolvedPresence::kRunning) << d.detail;
  EXPECT_EQ(d.pid, getpid());
  close(fd);
}

TEST(DetectResolvedTest, AListenerInAnotherNetworkNamespaceIsNotOurs) {
  const std::string path = TempPath("io.systemd.Resolve");
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe calls: a new network namespace, then listen and wait to be killed.
    char status = unshare(CLONE_NEWNET) == 0 && BindUnix(path, true) >= 0 ? 'y' : 'n';
    (void)!write(ready[1], &status, 1);
    while (true) pause();
  }
  close(ready[1]);
  char status = 'n';
  ASSERT_EQ(read(ready[0], &status, 1), 1);
  close(ready[0]);
  if (status != 'y') {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    GTEST_SKIP() << "cannot create a network namespace here (needs root)";
  }
  const ResolvedDetection d = DetectResolved(path);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(d.presence, ResolvedPresence::kOtherNamespace) << d.detail;
  EXPECT_EQ(d.pid, child);
}

TEST(SubprocessRunnerTest, ExitCodeAndOutput) {
  SubprocessRunner runner;
  absl::StatusOr<CommandResult> r = runner.Run({"true"}, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "");
  r = runner.Run({"sh", "-c", "echo out; echo err >&2; exit 3"}, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->output, "out\nerr");
  // No shell in between: the argument reaches the program as it is.
  r = runner.Run({"echo", "~mesh", "$HOME"}, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output, "~mesh $HOME");
  // Output beyond the cap is read and dropped, so the child never blocks on a full pipe.
  r = runner.Run({"head", "-c", "100000", "/dev/zero"}, std::chrono::seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output.size(), CommandRunner::kMaxOutput);
}

TEST(SubprocessRunnerTest, MissingProgramAndTimeout) {
  SubprocessRunner runner;
  absl::StatusOr<CommandResult> r =
      runner.Run({"tm-no-such-program-anywhere"}, std::chrono::seconds(10));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("tm-no-such-program-anywhere is not installed"));
  const auto start = std::chrono::steady_clock::now();
  r = runner.Run({"sleep", "30"}, std::chrono::milliseconds(200));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(SubprocessRunnerTest, ChildrenDoNotInheritBlockedSignals) {
  // The agent blocks SIGINT and SIGTERM in every thread; resolvectl must still be killable.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  SubprocessRunner runner;
  absl::StatusOr<CommandResult> r =
      runner.Run({"sh", "-c", "grep SigBlk /proc/self/status"}, std::chrono::seconds(10));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output, "SigBlk:\t0000000000000000");
}

// Records every command; `behaviour` decides each result (default: exit 0).
class FakeCommandRunner final : public CommandRunner {
 public:
  using Behaviour = std::function<absl::StatusOr<CommandResult>(const Argv&)>;
  explicit FakeCommandRunner(Behaviour behaviour = nullptr) : behaviour_(std::move(behaviour)) {}

  absl::StatusOr<CommandResult> Run(const Argv& argv, std::chrono::milliseconds) override {
    {
      absl::MutexLock lock(&mu_);
      commands_.push_back(argv);
    }
    if (behaviour_) return behaviour_(argv);
    return CommandResult{};
  }
  std::vector<Argv> commands() const {
    absl::MutexLock lock(&mu_);
    return commands_;
  }
  size_t count() const {
    absl::MutexLock lock(&mu_);
    return commands_.size();
  }

 private:
  const Behaviour behaviour_;
  mutable absl::Mutex mu_;
  std::vector<Argv> commands_ ABSL_GUARDED_BY(mu_);
};

ResolvedLink Link(const std::string& domain) {
  return MakeResolvedLink("tm0", domain, {P("10.99.0.0/16")}, {E("10.99.0.2:53")});
}

ResolvedRegistrar::Options FastRetries(size_t retries) {
  ResolvedRegistrar::Options options;
  options.retry_delays.assign(retries, std::chrono::milliseconds(1));
  return options;
}

std::vector<Argv> WithRevert(std::vector<std::vector<Argv>> groups) {
  std::vector<Argv> out;
  for (auto& g : groups) out.insert(out.end(), g.begin(), g.end());
  out.push_back(ResolvectlRevertCommand("tm0"));
  return out;
}

TEST(ResolvedRegistrarTest, RegistersOnceAndAgainOnChangeThenRevertsOnStop) {
  auto runner = std::make_unique<FakeCommandRunner>();
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 1; }));
  // The same link again (every map update publishes it) runs nothing.
  registrar.Register(Link("mesh"));
  registrar.Register(Link("corp"));
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 2; }));
  registrar.Register(Link("corp"));
  registrar.Stop();
  EXPECT_EQ(registrar.reverted(), 1u);
  EXPECT_EQ(registrar.failed(), 0u);
  EXPECT_EQ(fake->commands(),
            WithRevert({ResolvectlCommands(Link("mesh")), ResolvectlCommands(Link("corp"))}));
  registrar.Stop();  // Once only.
  EXPECT_EQ(registrar.reverted(), 1u);
}

TEST(ResolvedRegistrarTest, RequestsWhileACommandRunsCoalesce) {
  absl::Notification started, release;
  auto runner =
      std::make_unique<FakeCommandRunner>([&](const Argv&) -> absl::StatusOr<CommandResult> {
        if (!started.HasBeenNotified()) {
          started.Notify();
          release.WaitForNotification();
        }
        return CommandResult{};
      });
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner));
  registrar.Register(Link("a"));
  started.WaitForNotification();
  // The thread is inside a child process: these return at once and only the last one counts.
  registrar.Register(Link("b"));
  registrar.Register(Link("c"));
  release.Notify();
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 2; }));
  registrar.Stop();
  EXPECT_EQ(fake->commands(),
            WithRevert({ResolvectlCommands(Link("a")), ResolvectlCommands(Link("c"))}));
}

TEST(ResolvedRegistrarTest, RetriesAFailureThenSucceeds) {
  int dns_calls = 0;  // Only the registrar's thread runs commands.
  auto runner = std::make_unique<FakeCommandRunner>([&](const Argv& argv) {
    CommandResult r;
    if (argv[1] == "dns" && ++dns_calls <= 2) {
      r.exit_code = 1;
      r.output = "Failed to set DNS configuration: Link tm0 not known";
    }
    return absl::StatusOr<CommandResult>(r);
  });
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner), FastRetries(4));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 1; }));
  EXPECT_EQ(registrar.failed(), 2u);
  registrar.Stop();
  EXPECT_EQ(fake->count(), 2 + ResolvectlCommands(Link("mesh")).size() + 1);
}

TEST(ResolvedRegistrarTest, GivesUpAfterItsRetriesUntilAnotherLinkIsAskedFor) {
  auto runner = std::make_unique<FakeCommandRunner>([](const Argv&) {
    return absl::StatusOr<CommandResult>(CommandResult{1, "Failed to connect to bus"});
  });
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner), FastRetries(2));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.failed() == 3; }));  // The try and two retries.
  registrar.Register(Link("mesh"));  // The link given up on: not tried again.
  registrar.Register(Link("corp"));
  ASSERT_TRUE(WaitFor([&] { return registrar.failed() == 6; }));
  registrar.Stop();
  EXPECT_EQ(registrar.registered(), 0u);
  EXPECT_EQ(registrar.reverted(), 0u);  // The revert failed too.
  // Each attempt stops at its first failing command; then one revert.
  EXPECT_EQ(fake->count(), 6u + 1u);
  EXPECT_EQ(fake->commands().back(), ResolvectlRevertCommand("tm0"));
}

TEST(ResolvedRegistrarTest, MissingResolvectlIsNotRetriedNorReverted) {
  auto runner = std::make_unique<FakeCommandRunner>([](const Argv&) {
    return absl::StatusOr<CommandResult>(absl::NotFoundError("resolvectl is not installed"));
  });
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner), FastRetries(3));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.failed() == 1; }));
  registrar.Stop();
  EXPECT_EQ(fake->count(), 1u);
}

// resolved's pid as the registrar sees it, counting the rechecks.
struct FakeResolvedPid {
  std::atomic<pid_t> pid{100};
  std::atomic<int> calls{0};
  // Waits until the registrar has looked `n` more times (each look after the change).
  bool SeenTimes(int n) {
    const int target = calls.load() + n;
    return WaitFor([&] { return calls.load() >= target; });
  }
};

ResolvedRegistrar::Options Watching(FakeResolvedPid* fake) {
  ResolvedRegistrar::Options options = FastRetries(0);
  options.resolved_pid = [fake] {
    fake->calls.fetch_add(1);
    return fake->pid.load();
  };
  options.recheck_interval = std::chrono::milliseconds(1);
  return options;
}

TEST(ResolvedRegistrarTest, ARestartedResolvedGetsTheLinkAgain) {
  FakeResolvedPid resolved;
  auto runner = std::make_unique<FakeCommandRunner>();
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner), Watching(&resolved));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 1; }));
  // Stopped: nothing to register with until it is back, under a new pid.
  resolved.pid = 0;
  ASSERT_TRUE(resolved.SeenTimes(3));
  EXPECT_EQ(registrar.registered(), 1u);
  resolved.pid = 200;
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 2; }));
  EXPECT_EQ(registrar.restarts_seen(), 1u);
  // The same resolved later: nothing more.
  ASSERT_TRUE(resolved.SeenTimes(3));
  EXPECT_EQ(registrar.registered(), 2u);
  EXPECT_EQ(fake->count(), 2 * ResolvectlCommands(Link("mesh")).size());
  registrar.Stop();
}

TEST(ResolvedRegistrarTest, ALinkGivenUpOnIsTriedAgainAfterAResolvedRestart) {
  FakeResolvedPid resolved;
  std::atomic<bool> fail{true};
  auto runner = std::make_unique<FakeCommandRunner>([&](const Argv&) {
    return absl::StatusOr<CommandResult>(CommandResult{fail ? 1 : 0, ""});
  });
  ResolvedRegistrar registrar(std::move(runner), Watching(&resolved));
  registrar.Register(Link("mesh"));
  ASSERT_TRUE(WaitFor([&] { return registrar.failed() == 1; }));
  fail = false;
  ASSERT_TRUE(resolved.SeenTimes(3));
  EXPECT_EQ(registrar.registered(), 0u);  // Given up until something changes.
  resolved.pid = 101;
  ASSERT_TRUE(WaitFor([&] { return registrar.registered() == 1; }));
  registrar.Stop();
}

TEST(ResolvedRegistrarTest, StopWithoutARegistrationRunsNothing) {
  auto runner = std::make_unique<FakeCommandRunner>();
  FakeCommandRunner* fake = runner.get();
  ResolvedRegistrar registrar(std::move(runner));
  registrar.Stop();
  EXPECT_EQ(fake->count(), 0u);
}

}  // namespace
}  // namespace tunnelmesh
