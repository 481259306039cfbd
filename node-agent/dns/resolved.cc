#include "node-agent/dns/resolved.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/log.h"
#include "lib/dns/message.h"

extern char** environ;

namespace tunnelmesh {
namespace {

constexpr char kResolvectl[] = "resolvectl";

// Closes a descriptor at scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string Errno(int err) { return std::strerror(err); }

// The resolvectl form of a server: "10.99.0.2", "fd99::2", or with a port other than 53
// "10.99.0.2:5353" / "[fd99::2]:5353" (resolvectl takes ADDRESS[:PORT] since systemd 246).
std::string ServerArgument(const Endpoint& server) {
  if (server.port() == 53) return server.address().ToString();
  return server.ToString();
}

bool SafeShellWord(const std::string& word) {
  if (word.empty()) return false;
  for (char c : word) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == ':' || c == '/' || c == '[' ||
                    c == ']' || c == '%' || c == '@' || c == '+' || c == '=' || c == ',';
    if (!ok) return false;
  }
  return true;
}

// Whether the two paths are the same namespace (same inode on the nsfs device).
absl::StatusOr<bool> SameNamespace(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (stat(a.c_str(), &sa) != 0) return absl::UnavailableError(a + ": " + Errno(errno));
  if (stat(b.c_str(), &sb) != 0) return absl::UnavailableError(b + ": " + Errno(errno));
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string ReverseZoneOf(const Prefix& range) {
  const bool v4 = range.address().is_v4();
  const int total = v4 ? 4 : 32;                                  // labels of a full reverse name
  const int keep = v4 ? range.length() / 8 : range.length() / 4;  // whole octets or nibbles
  if (keep <= 0) return "";
  // ReverseName gives every label, least significant first: drop those below the range.
  const std::vector<std::string> labels = absl::StrSplit(dns::ReverseName(range.address()), '.');
  const size_t drop = static_cast<size_t>(total - keep);
  if (labels.size() <= drop) return "";
  return absl::StrJoin(labels.begin() + static_cast<std::ptrdiff_t>(drop), labels.end(), ".");
}

ResolvedLink MakeResolvedLink(const std::string& interface_name, const std::string& domain,
                              const std::vector<Prefix>& ranges, std::vector<Endpoint> servers) {
  ResolvedLink link;
  link.interface_name = interface_name;
  std::stable_partition(servers.begin(), servers.end(),
                        [](const Endpoint& e) { return e.address().is_v4(); });
  link.servers = std::move(servers);
  link.domains.push_back(domain.empty() ? "mesh" : domain);
  for (const Prefix& range : ranges) {
    std::string zone = ReverseZoneOf(range);
    if (zone.empty()) continue;
    if (std::find(link.domains.begin(), link.domains.end(), zone) == link.domains.end()) {
      link.domains.push_back(std::move(zone));
    }
  }
  return link;
}

std::vector<std::vector<std::string>> ResolvectlCommands(const ResolvedLink& link) {
  const std::string& i = link.interface_name;
  std::vector<std::string> dns = {kResolvectl, "dns", i};
  for (const Endpoint& server : link.servers) dns.push_back(ServerArgument(server));
  std::vector<std::string> domain = {kResolvectl, "domain", i};
  for (const std::string& d : link.domains) domain.push_back("~" + d);
  return {dns,
          domain,
          {kResolvectl, "default-route", i, "false"},
          {kResolvectl, "llmnr", i, "no"},
          {kResolvectl, "dnssec", i, "no"},
          {kResolvectl, "dnsovertls", i, "no"}};
}

std::vector<std::string> ResolvectlRevertCommand(const std::string& interface_name) {
  return {kResolvectl, "revert", interface_name};
}

std::string ShellCommandLine(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& word : argv) {
    if (!out.empty()) out += ' ';
    if (SafeShellWord(word)) {
      out += word;
      continue;
    }
    out += '\'';
    for (char c : word) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

ResolvedDetection DetectResolved(const std::string& socket_path) {
  ResolvedDetection out;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    out.detail = "socket path too long: " + socket_path;
    return out;
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    out.detail = "socket: " + Errno(errno);
    return out;
  }
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    out.detail = "connect " + socket_path + ": " + Errno(errno);
    return out;
  }
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.pid <= 0) {
    out.presence = ResolvedPresence::kUnknownNamespace;
    out.detail = "its pid is not visible from here (another pid namespace)";
    return out;
  }
  out.pid = peer.pid;
  absl::StatusOr<bool> same =
      SameNamespace("/proc/self/ns/net", absl::StrCat("/proc/", peer.pid, "/ns/net"));
  if (!same.ok()) {
    out.presence = ResolvedPresence::kUnknownNamespace;
    out.detail = absl::StrCat("cannot compare network namespaces with pid ", peer.pid, ": ",
                              same.status().message());
    return out;
  }
  out.presence = *same ? ResolvedPresence::kRunning : ResolvedPresence::kOtherNamespace;
  out.detail = absl::StrCat("pid ", peer.pid);
  return out;
}

std::vector<std::string> HostResolverAdvice(const ResolvedDetection& detection,
                                            const ResolvedLink& link, const Endpoint& loopback,
                                            const std::optional<Endpoint>& upstream) {
  std::string why;
  switch (detection.presence) {
    case ResolvedPresence::kRunning:
      why = "runs here, but the agent was told not to register with it (--no-resolved)";
      break;
    case ResolvedPresence::kNotRunning:
      why = "is not running (" + detection.detail + ")";
      break;
    case ResolvedPresence::kOtherNamespace:
      why = "runs in another network namespace (" + detection.detail +
            "), whose links are not this agent's: nothing is registered there";
      break;
    case ResolvedPresence::kUnknownNamespace:
      why = "runs, but not provably in this network namespace (" + detection.detail +
            "), so nothing is registered there";
      break;
  }
  const std::string domain = link.domains.empty() ? "mesh" : link.domains.front();
  const std::string address = loopback.address().ToString();
  std::vector<std::string> lines;
  lines.push_back(absl::StrCat("systemd-resolved ", why,
                               ": point this host's resolver at the "
                               "mesh DNS server (",
                               ServerArgument(loopback), ") to resolve NAME.", domain,
                               " in one of these ways:"));
  std::vector<std::string> commands;
  for (const auto& argv : ResolvectlCommands(link)) commands.push_back(ShellCommandLine(argv));
  lines.push_back(
      absl::StrCat("- with systemd-resolved running in this network namespace: restart the "
                   "agent (it registers the domain on ",
                   link.interface_name, " itself) or run ", absl::StrJoin(commands, "; ")));
  std::string resolv_conf = absl::StrCat("- without it: make `nameserver ", address,
                                         "` the first line of /etc/resolv.conf's nameservers");
  if (upstream.has_value()) {
    absl::StrAppend(&resolv_conf, " (names outside ", domain, " go on to --dns-upstream ",
                    upstream->ToString(), ")");
  } else {
    absl::StrAppend(&resolv_conf,
                    " and restart the agent with --dns-upstream set to the resolver listed there "
                    "before, so that other names still resolve");
  }
  if (loopback.port() != 53) {
    absl::StrAppend(&resolv_conf, "; resolv.conf takes no port, so this needs --dns-port 53");
  }
  lines.push_back(std::move(resolv_conf));
  lines.push_back(absl::StrCat("- for processes in a network namespace NAME: `nameserver ", address,
                               "` in /etc/netns/NAME/resolv.conf (what `ip netns exec "
                               "NAME` gives them as /etc/resolv.conf)"));
  return lines;
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<CommandResult> SubprocessRunner::Run(const std::vector<std::string>& argv,
                                                    std::chrono::milliseconds timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("no program to run");
  const std::string what = ShellCommandLine(argv);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError("pipe: " + Errno(errno));
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, &attributes, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  write_end.reset();
  if (spawned == ENOENT) return absl::NotFoundError(argv[0] + " is not installed (not in PATH)");
  if (spawned != 0) return absl::InternalError("starting " + what + ": " + Errno(spawned));

  // From here the child must be reaped on every path.
  // Glibc 2.36's <sys/pidfd.h> declares pidfd_open without C linkage: the system call itself.
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.get() < 0) {
    const int err = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return absl::InternalError("pidfd_open: " + Errno(err));
  }
  CommandResult result;
  char buffer[1024];
  auto keep = [&result, &buffer](ssize_t got) {
    const size_t room = kMaxOutput - std::min(kMaxOutput, result.output.size());
    result.output.append(buffer, std::min(room, static_cast<size_t>(got)));
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool exited = false;
  bool output_open = true;
  while (!exited) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return absl::DeadlineExceededError(
          absl::StrCat(what, " did not finish within ", timeout.count(), " ms (killed)"));
    }
    pollfd fds[2] = {{pidfd.get(), POLLIN, 0}, {read_end.get(), POLLIN, 0}};
    const int n = poll(fds, output_open ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) {
      const int err = errno;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return absl::InternalError("poll: " + Errno(err));
    }
    if (n <= 0) continue;
    if (output_open && fds[1].revents != 0) {
      // Read even past the cap, so that the child never blocks on a full pipe.
      const ssize_t got = read(read_end.get(), buffer, sizeof(buffer));
      if (got > 0) {
        keep(got);
      } else if (got == 0 || errno != EINTR) {
        output_open = false;
      }
    }
    if (fds[0].revents != 0) exited = true;
  }
  // The child is gone and what it wrote is in the pipe; a grandchild may hold the write end
  // open, so read without waiting.
  if (output_open && fcntl(read_end.get(), F_SETFL, O_NONBLOCK) == 0) {
    ssize_t got;
    while ((got = read(read_end.get(), buffer, sizeof(buffer))) > 0) keep(got);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return absl::InternalError("waitpid: " + Errno(errno));
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  while (!result.output.empty() && (result.output.back() == '\n' || result.output.back() == ' ')) {
    result.output.pop_back();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------

ResolvedRegistrar::ResolvedRegistrar(std::unique_ptr<CommandRunner> runner, Options options)
    : runner_(std::move(runner)), options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

ResolvedRegistrar::~ResolvedRegistrar() { Stop(); }

void ResolvedRegistrar::Register(ResolvedLink link) {
  absl::MutexLock lock(&mu_);
  wanted_ = std::move(link);
}

absl::Status ResolvedRegistrar::RunCommand(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> result = runner_->Run(argv, options_.command_timeout);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::UnavailableError(absl::StrCat(ShellCommandLine(argv), ": exit ", result->exit_code,
                                               result->output.empty() ? "" : ": ", result->output));
  }
  return absl::OkStatus();
}

absl::Status ResolvedRegistrar::Apply(const ResolvedLink& link) {
  for (const std::vector<std::string>& argv : ResolvectlCommands(link)) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return absl::CancelledError("stopping");
    }
    const absl::Status s = RunCommand(argv);
    // Once resolvectl ran, the link may hold some of the settings: Stop reverts it.
    if (s.code() != absl::StatusCode::kNotFound) touched_interface_ = link.interface_name;
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

bool ResolvedRegistrar::Pending() const {
  return wanted_.has_value() && wanted_ != applied_ && wanted_ != given_up_;
}

void ResolvedRegistrar::Recheck() {
  const pid_t pid = options_.resolved_pid();
  if (pid == resolved_pid_) return;
  if (pid == 0) {
    TM_LOG_WARN(
        "systemd-resolved stopped (it ran as pid {}): mesh names resolve through it again once "
        "it is back",
        resolved_pid_);
  } else {
    restarts_seen_.fetch_add(1, std::memory_order_relaxed);
    const std::string before =
        resolved_pid_ == 0 ? "it had stopped" : absl::StrCat("was ", resolved_pid_);
    TM_LOG_INFO("systemd-resolved runs as pid {} now ({}): registering the link again", pid,
                before);
  }
  resolved_pid_ = pid;
  absl::MutexLock lock(&mu_);
  if (pid != 0) {
    applied_.reset();
    given_up_.reset();
  }
}

void ResolvedRegistrar::Loop() {
  // After a failure: the link that failed and when it may be tried again.
  std::optional<ResolvedLink> failing;
  std::optional<absl::Time> retry_at;
  const bool watch = static_cast<bool>(options_.resolved_pid);
  while (true) {
    ResolvedLink link;
    bool recheck = false;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || Pending(); };
      // Once something was tried, look at resolved's pid every recheck_interval meanwhile.
      const bool tried = applied_.has_value() || given_up_.has_value();
      if (watch && tried && !retry_at) {
        recheck = !mu_.AwaitWithTimeout(absl::Condition(&ready),
                                        absl::FromChrono(options_.recheck_interval));
      } else {
        mu_.Await(absl::Condition(&ready));
      }
      if (!recheck) {
        // Requests that arrive during the delay coalesce into the one tried when it ends.
        if (retry_at && !stop_) mu_.AwaitWithDeadline(absl::Condition(&stop_), *retry_at);
        if (stop_) return;
        if (!Pending()) continue;
        link = *wanted_;
      }
    }
    if (recheck) {
      Recheck();
      continue;
    }
    if (watch) resolved_pid_ = options_.resolved_pid();
    if (link != failing) attempt_ = 0;  // Another link starts with all its retries.
    retry_at.reset();
    failing.reset();
    const absl::Status status = Apply(link);
    if (status.code() == absl::StatusCode::kCancelled) return;
    if (status.ok()) {
      {
        absl::MutexLock lock(&mu_);
        applied_ = link;
        given_up_.reset();
      }
      attempt_ = 0;
      registered_.fetch_add(1, std::memory_order_relaxed);
      std::vector<std::string> servers;
      for (const Endpoint& e : link.servers) servers.push_back(ServerArgument(e));
      TM_LOG_INFO(
          "systemd-resolved: {} names go to this agent through link {} (dns={} domains=~{}; "
          "`resolvectl status {}` shows it)",
          link.domains.front(), link.interface_name, absl::StrJoin(servers, ","),
          absl::StrJoin(link.domains, ",~"), link.interface_name);
      continue;
    }
    failed_.fetch_add(1, std::memory_order_relaxed);
    // A missing resolvectl will not appear by retrying; a failed call may succeed once resolved
    // has seen the new link.
    if (status.code() != absl::StatusCode::kNotFound && attempt_ < options_.retry_delays.size()) {
      const std::chrono::milliseconds delay = options_.retry_delays[attempt_++];
      TM_LOG_DEBUG("systemd-resolved: registering link {} failed, retrying in {} ms: {}",
                   link.interface_name, delay.count(), std::string(status.message()));
      failing = link;
      retry_at = absl::Now() + absl::FromChrono(delay);
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      given_up_ = link;
    }
    attempt_ = 0;
    std::vector<std::string> lines;
    for (const auto& argv : ResolvectlCommands(link)) lines.push_back(ShellCommandLine(argv));
    TM_LOG_WARN(
        "systemd-resolved: could not register the mesh domain on link {} ({}); {} names will "
        "not resolve through the host's resolver until you run, as root: {}",
        link.interface_name, std::string(status.message()), link.domains.front(),
        absl::StrJoin(lines, "; "));
  }
}

void ResolvedRegistrar::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (touched_interface_.empty()) return;
  const std::vector<std::string> revert = ResolvectlRevertCommand(touched_interface_);
  if (absl::Status s = RunCommand(revert); !s.ok()) {
    TM_LOG_WARN(
        "systemd-resolved: {} failed ({}); resolved drops the link's settings when the "
        "interface goes away",
        ShellCommandLine(revert), std::string(s.message()));
    return;
  }
  reverted_.fetch_add(1, std::memory_order_relaxed);
  TM_LOG_INFO("systemd-resolved: reverted link {} (mesh names no longer go to this agent)",
              touched_interface_);
}

}  // namespace tunnelmesh
