// sim_agents: N simulated mesh members in one process, for measuring how fast the coordinator
// spreads a Mesh change (bench/apply_latency.sh). Each member has its own key, its own
// CoordinatorClient (so its own gRPC channel, TLS with the coordinator's CA pinned by --ca-hash,
// exactly as tunnelmesh-agent join talks to the coordinator), registers with the join token and
// follows its Watch stream. There is no TUN device and no data plane.
//
//   sim_agents --coordinator HOST:PORT --token-file F --ca-hash sha256:... --count N
//              [--mesh NAME] [--name-prefix sim] [--settle-timeout S] [--log-level L]
//
// stderr: "ready N" once every member has received its first full map (printed once).
// stdout: one JSON line per settings change members observed, when all N have seen it (or when
//   --settle-timeout seconds have passed since the first did, or at exit):
//   {"domain": "...", "mtu": 1420, "members_seen": k, "first_ms": ..., "last_ms": ...}
//   first_ms/last_ms are CLOCK_REALTIME milliseconds at which the first and the last member
//   received it, comparable with `date +%s%3N` taken when the change was made.
// A member's "change" is a settings update whose (domain, mtu) differs from what that member had
// before; the settings of the first full map are the baseline, not a change.
//
// Threads: one per member (Register, then Watch until the stream ends; it registers again or
// re-watches on failure); the main thread owns the signals, prints reports and stops the members.
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "nlohmann/json.hpp"
#include "node-agent/control/coordinator_client.h"

namespace tunnelmesh {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;
constexpr int kMaxCount = 1000;
// Retries back off from 200 ms to 2 s, so that 1000 members cannot flood a coordinator that is
// struggling already.
constexpr auto kRetryDelayMin = std::chrono::milliseconds(200);
constexpr auto kRetryDelayMax = std::chrono::milliseconds(2000);
constexpr absl::Duration kRegisterTimeout = absl::Seconds(5);
// How often the main thread looks for finished changes: the report itself carries the receive
// times, so this only delays the printing, not the figures.
constexpr long kReportPollNs = 20'000'000;
// Members are started one after another, each once the one before has its map (or this long has
// passed): 50 TLS handshakes at once on a loaded machine can outlast the connect deadline the
// agent's channel settings give (about 100 ms at first), and the members would then keep failing
// together. Real agents do not all start in the same millisecond either.
constexpr auto kStartStagger = std::chrono::seconds(5);
constexpr long kStartPollNs = 2'000'000;

struct Options {
  std::string coordinator;
  std::string token_file;
  std::string ca_hash;
  int count = 0;
  std::string mesh;
  std::string name_prefix = "sim";
  int settle_timeout_s = 10;
  std::string log_level = "warn";
};

int64_t RealtimeMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// What changes are told apart by: the settings fields the benchmark follows, and how many times
// before the member had moved to these same values (so A -> B -> A counts as two changes to A).
struct ChangeKey {
  std::string domain;
  uint32_t mtu = 0;
  int occurrence = 0;
  friend bool operator<(const ChangeKey& a, const ChangeKey& b) {
    return std::tie(a.domain, a.mtu, a.occurrence) < std::tie(b.domain, b.mtu, b.occurrence);
  }
};

// Collects what every member observed and decides when a change is ready to report.
// Thread-safe: members call Observe* from their threads, the main thread calls TakeReports; mu_
// guards all of its state.
class SettingsLog {
 public:
  explicit SettingsLog(int count) : count_(count), members_(count) {}

  // A full map arrived for `member`: its settings become the baseline (or, after a reconnect, a
  // change if they differ from what it had). Returns true the first time every member has had one.
  bool ObserveFullMap(int member, const coord::Settings& settings) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    MemberState& m = members_[member];
    if (!m.has_full_map) {
      m.has_full_map = true;
      m.domain = settings.domain();
      m.mtu = settings.mtu();
      return ++members_with_map_ == count_;
    }
    RecordLocked(&m, settings);
    return false;
  }

  // A delta carrying settings arrived for `member`.
  void ObserveSettings(int member, const coord::Settings& settings) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    MemberState& m = members_[member];
    if (!m.has_full_map) return;  // Cannot happen on a well-formed stream: the full map is first.
    RecordLocked(&m, settings);
  }

  int members_with_map() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return members_with_map_;
  }

  // JSON lines for the changes that every member has seen, that have waited `settle` since the
  // first member saw them, or (with `flush`) all pending ones; in the order they were first seen.
  std::vector<std::string> TakeReports(std::chrono::steady_clock::duration settle, bool flush)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> out;
    for (auto& [key, change] : changes_) {
      if (change.reported) continue;
      if (change.members_seen < count_ && now - change.first_steady < settle && !flush) continue;
      change.reported = true;
      nlohmann::ordered_json line = {{"domain", key.domain},
                                     {"mtu", key.mtu},
                                     {"members_seen", change.members_seen},
                                     {"first_ms", change.first_ms},
                                     {"last_ms", change.last_ms}};
      out.emplace_back(change.first_steady, line.dump());
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> lines;
    for (auto& [t, line] : out) lines.push_back(std::move(line));
    return lines;
  }

 private:
  struct MemberState {
    bool has_full_map = false;
    std::string domain;
    uint32_t mtu = 0;
    std::map<std::pair<std::string, uint32_t>, int> times_moved_to;
  };
  struct Change {
    int members_seen = 0;
    std::chrono::steady_clock::time_point first_steady;
    int64_t first_ms = 0;
    int64_t last_ms = 0;
    bool reported = false;
  };

  void RecordLocked(MemberState* m, const coord::Settings& settings)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The coordinator resends settings on every manifest reload, changed or not.
    if (settings.domain() == m->domain && settings.mtu() == m->mtu) return;
    m->domain = settings.domain();
    m->mtu = settings.mtu();
    ChangeKey key{m->domain, m->mtu, m->times_moved_to[{m->domain, m->mtu}]++};
    const int64_t now_ms = RealtimeMs();
    auto [it, inserted] = changes_.try_emplace(key);
    Change& change = it->second;
    if (inserted) {
      change.first_steady = std::chrono::steady_clock::now();
      change.first_ms = now_ms;
    }
    if (change.reported) {
      TM_LOG_WARN("a member saw domain={} after its change was reported (--settle-timeout)",
                  key.domain);
      return;
    }
    ++change.members_seen;
    change.last_ms = std::max(change.last_ms, now_ms);
  }

  const int count_;
  absl::Mutex mu_;
  std::vector<MemberState> members_ ABSL_GUARDED_BY(mu_);
  int members_with_map_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<ChangeKey, Change> changes_ ABSL_GUARDED_BY(mu_);
};

// Set once by the main thread; members wait on it instead of sleeping so they stop at once.
class StopSignal {
 public:
  void Stop() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }
  // Waits up to `delay`; true once stopped.
  bool WaitFor(std::chrono::milliseconds delay) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopped_; };
    return mu_.AwaitWithTimeout(absl::Condition(&stopped), absl::FromChrono(delay));
  }
  bool stopped() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return stopped_;
  }

 private:
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// Errors a member cannot recover from by retrying (wrong token, wrong mesh): the main thread
// reports the first one and exits.
class FatalError {
 public:
  void Set(const std::string& message) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (!message_) message_ = message;
  }
  std::optional<std::string> Get() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return message_;
  }

 private:
  absl::Mutex mu_;
  std::optional<std::string> message_ ABSL_GUARDED_BY(mu_);
};

struct Shared {
  const Options* options;
  std::string token;
  SettingsLog* log;
  StopSignal* stop;
  FatalError* fatal;
};

// One simulated member. Its thread owns everything but `client_`'s watch, which the main thread
// cancels through Cancel().
class SimMember {
 public:
  SimMember(int index, const std::string& target, const std::string& ca_pem, const Shared& shared)
      : index_(index),
        name_(shared.options->name_prefix + "-" + std::to_string(index + 1)),
        private_key_(SecretKey::GeneratePrivate()),
        public_key_(DerivePublicKey(private_key_)),
        client_(std::make_unique<CoordinatorClient>(target, ca_pem)),
        shared_(shared) {}

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Cancel() { client_->CancelWatch(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    bool registered = false;
    std::chrono::milliseconds delay = kRetryDelayMin;
    while (!shared_.stop->stopped()) {
      if (!registered) {
        absl::Status s = Register();
        if (!s.ok()) {
          if (IsFatal(s.code())) {
            shared_.fatal->Set("member " + name_ + ": Register: " + std::string(s.message()));
            return;
          }
          TM_LOG_WARN("register failed, retrying member={} error={}", name_,
                      std::string(s.message()));
          if (Backoff(&delay)) return;
          continue;
        }
        registered = true;
        delay = kRetryDelayMin;
      }
      bool got_update = false;
      absl::Status s = client_->Watch([&](const coord::MapUpdate& update) {
        got_update = true;
        OnUpdate(update);
      });
      if (shared_.stop->stopped()) return;
      if (got_update) delay = kRetryDelayMin;  // The stream worked: this is a fresh failure.
      TM_LOG_WARN("watch ended, reconnecting member={} error={}", name_, std::string(s.message()));
      // A coordinator that lost our session wants a new Register first.
      if (s.code() == absl::StatusCode::kUnauthenticated) registered = false;
      if (Backoff(&delay)) return;
    }
  }

  // Waits `*delay` and doubles it; true once stopped.
  bool Backoff(std::chrono::milliseconds* delay) {
    const bool stopped = shared_.stop->WaitFor(*delay);
    *delay = std::min(*delay * 2, kRetryDelayMax);
    return stopped;
  }

  absl::Status Register() {
    coord::RegisterRequest request;
    request.set_join_token(shared_.token);
    request.set_public_key(
        std::string(reinterpret_cast<const char*>(public_key_.bytes.data()), kKeySize));
    request.set_name(name_);
    request.set_kind(coord::MEMBER_KIND_EXTERNAL);
    // Nothing listens there: the simulated members carry no traffic.
    request.set_listen_port(51820);
    request.set_mesh(shared_.options->mesh);
    absl::StatusOr<coord::RegisterResponse> response =
        client_->Register(request, private_key_, kRegisterTimeout);
    if (!response.ok()) return response.status();
    client_->SetSessionToken(response->session_token());
    return absl::OkStatus();
  }

  void OnUpdate(const coord::MapUpdate& update) {
    if (update.full()) {
      if (shared_.log->ObserveFullMap(index_, update.settings())) {
        std::fprintf(stderr, "ready %d\n", shared_.options->count);
        std::fflush(stderr);
      }
    } else if (update.has_settings()) {
      shared_.log->ObserveSettings(index_, update.settings());
    }
  }

  static bool IsFatal(absl::StatusCode code) {
    return code == absl::StatusCode::kPermissionDenied || code == absl::StatusCode::kNotFound ||
           code == absl::StatusCode::kInvalidArgument ||
           code == absl::StatusCode::kFailedPrecondition;
  }

  const int index_;
  const std::string name_;
  SecretKey private_key_;
  const PublicKey public_key_;
  std::unique_ptr<CoordinatorClient> client_;
  const Shared shared_;
  std::thread thread_;
};

int Usage(const std::string& message) {
  std::fprintf(stderr, "sim_agents: %s\n", message.c_str());
  return kExitUsage;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "sim_agents: %s\n", message.c_str());
  return kExitFailure;
}

// "HOST:PORT" or "[IPV6]:PORT"; the port is required (the benchmark's coordinator picks a free
// one).
bool ParseTarget(const std::string& text, std::string* host, uint16_t* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = text.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // An IPv6 address needs brackets.
  }
  uint32_t p = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &p) || p == 0 || p > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(p);
  return true;
}

// A DNS label once "-N" is appended: lower-case letters, digits and inner dashes.
bool ValidNamePrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() > 50 || prefix.front() == '-') return false;
  return std::all_of(prefix.begin(), prefix.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-';
  });
}

void PrintReports(SettingsLog* log, std::chrono::seconds settle, bool flush) {
  for (const std::string& line : log->TakeReports(settle, flush)) {
    std::fprintf(stdout, "%s\n", line.c_str());
  }
  std::fflush(stdout);
}

int Run(const Options& options) {
  if (!InitLogging(options.log_level)) {
    return Usage("--log-level \"" + options.log_level +
                 "\" is not one of trace, debug, info, warn, error");
  }
  std::string host;
  uint16_t port = 0;
  if (!ParseTarget(options.coordinator, &host, &port)) {
    return Usage("--coordinator \"" + options.coordinator + "\" is not HOST:PORT or [IPV6]:PORT");
  }
  if (absl::Status s = ValidateCaHash(options.ca_hash); !s.ok()) {
    return Usage("--ca-hash: " + std::string(s.message()));
  }
  if (!ValidNamePrefix(options.name_prefix)) {
    return Usage("--name-prefix \"" + options.name_prefix +
                 "\" must be 1 to 50 lower-case letters, digits or dashes, starting with a "
                 "letter or digit");
  }
  absl::StatusOr<std::string> token_text = ReadTrimmedFile(options.token_file);
  const std::string token = token_text.ok() ? *token_text : std::string();
  if (token.empty()) {
    return Usage("cannot read a join token from --token-file " + options.token_file);
  }
  InitCrypto();

  // Block the signals before any thread starts, so that only sigtimedwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The CA is checked against --ca-hash once, as the agent does at start; every member's channel
  // then trusts only that CA. With a hash given nothing is pinned, so the pin goes nowhere.
  absl::StatusOr<CoordinatorCa> ca = FetchCoordinatorCa(host, port, options.ca_hash, "/dev/null");
  if (!ca.ok()) return Fail(std::string(ca.status().message()));
  const std::string ca_pem = ca->pem;
  const std::string target =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);

  SettingsLog log(options.count);
  StopSignal stop;
  FatalError fatal;
  const Shared shared{&options, token, &log, &stop, &fatal};
  std::vector<std::unique_ptr<SimMember>> members;
  members.reserve(options.count);
  for (int i = 0; i < options.count; ++i) {
    members.push_back(std::make_unique<SimMember>(i, target, ca_pem, shared));
  }
  int exit_code = 0;
  // Waits up to `ns` for a signal; false once one came or a member failed for good.
  auto keep_going = [&](long ns) {
    timespec timeout{0, ns};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) return false;
    if (std::optional<std::string> error = fatal.Get()) {
      exit_code = Fail(*error);
      return false;
    }
    return true;
  };
  bool running = true;
  for (int i = 0; i < options.count && running; ++i) {
    members[i]->Start();
    const auto deadline = std::chrono::steady_clock::now() + kStartStagger;
    while (log.members_with_map() <= i && std::chrono::steady_clock::now() < deadline &&
           (running = keep_going(kStartPollNs))) {
    }
  }
  const std::chrono::seconds settle(options.settle_timeout_s);
  while (running && keep_going(kReportPollNs)) PrintReports(&log, settle, /*flush=*/false);
  stop.Stop();
  for (auto& member : members) member->Cancel();
  for (auto& member : members) member->Join();
  PrintReports(&log, settle, /*flush=*/true);
  return exit_code;
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  tunnelmesh::Options options;
  CLI::App app{"sim_agents: simulated mesh members that report when they see a Mesh change"};
  app.add_option("--coordinator", options.coordinator, "coordinator HOST:PORT")->required();
  app.add_option("--token-file", options.token_file, "file holding the join token")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--ca-hash", options.ca_hash,
                 "sha256:... of the coordinator's CA (STATE_DIR/ca-hash of the operator)")
      ->required();
  app.add_option("--count", options.count, "how many members to simulate")
      ->required()
      ->check(CLI::Range(1, tunnelmesh::kMaxCount));
  app.add_option("--mesh", options.mesh, "Mesh to join (default: the coordinator's only one)");
  app.add_option("--name-prefix", options.name_prefix,
                 "members are named PREFIX-1 ... PREFIX-N (default sim)");
  app.add_option("--settle-timeout", options.settle_timeout_s,
                 "seconds after the first member saw a change to report it even if not all did "
                 "(default 10)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error (warn)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return tunnelmesh::Run(options);
}
