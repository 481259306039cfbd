// tunnelmesh-agent: parses flags, wires the components together, handles signals. Subcommands:
//   tunnelmesh-agent --config FILE [--interface NAME] [--state-dir DIR]   run with a wg-quick
//   config tunnelmesh-agent genkey | genpsk | pubkey                             keys, as `wg`
//   makes them tunnelmesh-agent status [--json] [--watch [--interval 2s]] [--interface NAME]
//   [--state-dir DIR] query a running agent tunnelmesh-agent join HOST[:PORT] --token-file FILE
//   [--name N] [--label K=V ...]
//                    [--state-dir DIR] [--interface NAME] [--ca-hash sha256:...]
//   tunnelmesh-agent leave [--interface NAME] [--state-dir DIR]       leave the mesh and stop
//   tunnelmesh-agent explain SRC DST:PORT/PROTO [--json] [--interface NAME] [--state-dir DIR]
//                    what PeerPolicy decides a flow (exit 0 allow, 1 deny, 2 usage, 3 error)
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/log.h"
#include "lib/base/log_format.h"
#include "lib/base/rlimit.h"
#include "lib/crypto/keys.h"
#include "node-agent/agent/agent_metrics.h"
#include "node-agent/agent/join_options.h"
#include "node-agent/agent/run.h"
#include "node-agent/config/agent_config.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/control/status.h"
#include "node-agent/policy/rule_set.h"
#include "node-agent/transport/relay_client.h"
#include "tm_version.h"

namespace tunnelmesh {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
// `explain`: 0 allow, 1 deny (as `grep` answers yes and no), 2 bad arguments, 3 no answer.
constexpr int kExitExplainDeny = 1;
constexpr int kExitExplainError = 3;

struct Options {
  std::string config_path;
  std::string interface_name = "tm0";
  std::string state_dir = kDefaultStateDir;
  std::string log_level = "info";
  std::string log_format = "text";
  bool json = false;
  bool check = false;
  // --metrics-address (empty: the default) and --no-metrics, for join and config mode.
  std::string metrics_address;
  bool no_metrics = false;
};

int Fail(const std::string& what) {
  std::fprintf(stderr, "tunnelmesh-agent: %s\n", what.c_str());
  return kExitFailure;
}

// The relay, the coordinator, the control and UAPI sockets and the DNS server hold descriptors,
// more with many peers: the soft descriptor limit (often 1024) goes up to the hard limit the
// administrator set.
void RaiseFileLimit() {
  absl::StatusOr<DescriptorLimit> limit = RaiseDescriptorLimit();
  if (!limit.ok()) {
    TM_LOG_WARN("{}: the agent keeps the lower limit", std::string(limit.status().message()));
    return;
  }
  TM_LOG_DEBUG("descriptor limit (RLIMIT_NOFILE): soft {} (was {}), hard {}", limit->soft,
               limit->soft_before, limit->hard);
}

int GenKey() {
  InitCrypto();
  std::printf("%s\n", SecretKey::GeneratePrivate().ToBase64().c_str());
  return 0;
}

// A preshared key is 32 random bytes, unclamped, as `wg genpsk` makes it.
int GenPsk() {
  InitCrypto();
  std::printf("%s\n", SecretKey::Random().ToBase64().c_str());
  return 0;
}

int PubKey() {
  InitCrypto();
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  absl::StatusOr<SecretKey> key =
      SecretKey::FromBase64(std::string(absl::StripAsciiWhitespace(input)));
  if (!key.ok())
    return Fail("pubkey: standard input is not a private key: " +
                std::string(key.status().message()));
  std::printf("%s\n", DerivePublicKey(*key).ToBase64().c_str());
  return 0;
}

// `status` fails: with --json the error is JSON on stdout too, so programs parse every answer.
int StatusFail(const Options& options, const std::string& what) {
  if (options.json) std::printf("%s\n", nlohmann::json{{"error", what}}.dump().c_str());
  return Fail(what);
}

// One agent's status, parsed; the error names the socket and what to do.
absl::StatusOr<nlohmann::json> AskStatus(const std::string& state_dir,
                                         const std::string& interface_name) {
  absl::StatusOr<std::string> reply =
      ControlRequest(ControlSocketPath(state_dir, interface_name), "status");
  if (!reply.ok()) return reply.status();
  nlohmann::json status = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (status.is_discarded()) {
    return absl::InternalError("the agent of " + interface_name +
                               " sent a status that is not JSON");
  }
  return status;
}

// Without --interface: every agent with a control socket in the state directory (as `wg show`
// shows every interface); --json then prints the one agent's object, or {"agents": [...]} when
// several run.
int Status(const Options& options, bool interface_given) {
  std::vector<std::string> interfaces{options.interface_name};
  if (!interface_given) {
    absl::StatusOr<std::vector<std::string>> found = ListControlSockets(options.state_dir);
    if (!found.ok()) return StatusFail(options, std::string(found.status().message()));
    if (found->empty()) {
      return StatusFail(options, "no agent is running with state directory " + options.state_dir +
                                     " (no control socket there): start one with join or "
                                     "--config, or pass the --state-dir it runs with");
    }
    interfaces = *std::move(found);
  }
  std::vector<nlohmann::json> statuses;
  std::vector<std::string> errors;
  for (const std::string& interface_name : interfaces) {
    absl::StatusOr<nlohmann::json> status = AskStatus(options.state_dir, interface_name);
    if (status.ok()) {
      statuses.push_back(*std::move(status));
    } else {
      errors.push_back(std::string(status.status().message()));
    }
  }
  // With several sockets, one of a killed agent (no one answers) is mentioned, not fatal.
  if (statuses.empty()) return StatusFail(options, absl::StrJoin(errors, "; "));
  if (options.json) {
    const nlohmann::json out =
        statuses.size() == 1 ? statuses[0] : nlohmann::json{{"agents", statuses}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    for (size_t i = 0; i < statuses.size(); ++i) {
      std::printf("%s%s", i == 0 ? "" : "\n", FormatStatus(statuses[i], absl::Now()).c_str());
    }
  }
  for (const std::string& error : errors) {
    std::fprintf(stderr, "tunnelmesh-agent: %s\n", error.c_str());
  }
  if (options.check) {
    std::vector<std::string> problems;
    for (const nlohmann::json& status : statuses) {
      for (std::string& p : StatusProblems(status)) problems.push_back(std::move(p));
    }
    for (const std::string& p : problems)
      std::fprintf(stderr, "tunnelmesh-agent: check: %s\n", p.c_str());
    if (!problems.empty() || !errors.empty()) return kExitFailure;
  }
  return 0;
}

// `status --watch`: the status again every `interval` until interrupted (Ctrl-C). On a terminal
// the screen is cleared first, like watch(1); otherwise (and with --json) each report follows the
// last, so a program can read them as they come. An agent that is not (yet) running is reported
// each time and the watch goes on.
int StatusWatch(const Options& options, bool interface_given, const std::string& interval_text) {
  absl::Duration interval;
  if (!absl::ParseDuration(interval_text, &interval) || interval < absl::Milliseconds(100) ||
      interval > absl::Hours(1)) {
    std::fprintf(stderr,
                 "tunnelmesh-agent: status: --interval \"%s\" is not a duration from 100ms to 1h "
                 "(e.g. 2s)\n",
                 interval_text.c_str());
    return kExitUsage;
  }
  const bool clear = !options.json && isatty(STDOUT_FILENO) == 1;
  while (true) {
    if (clear) {
      std::printf("\033[H\033[2J");
      std::printf("every %s: tunnelmesh-agent status (Ctrl-C to stop)\n\n",
                  absl::FormatDuration(interval).c_str());
    }
    (void)Status(options, interface_given);
    std::fflush(stdout);
    absl::SleepFor(interval);
  }
}

int Explain(const Options& options, const std::string& source, const std::string& destination) {
  absl::StatusOr<policy::ExplainQuery> query = policy::ParseExplainArgs(source, destination);
  if (!query.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: explain: %s\n",
                 std::string(query.status().message()).c_str());
    return kExitUsage;
  }
  absl::StatusOr<std::string> reply =
      ControlRequest(ControlSocketPath(options.state_dir, options.interface_name),
                     policy::ExplainRequestLine(*query));
  if (!reply.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: explain: %s\n",
                 std::string(reply.status().message()).c_str());
    return kExitExplainError;
  }
  absl::StatusOr<policy::ExplainAnswer> answer = policy::ExplainAnswerFromJson(*reply);
  if (!answer.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: explain: %s\n",
                 std::string(answer.status().message()).c_str());
    return kExitExplainError;
  }
  if (options.json) {
    std::printf("%s\n", policy::ExplainAnswerJson(*answer).dump().c_str());
  } else {
    std::printf("%s\n", policy::FormatExplainAnswer(*query, *answer).c_str());
  }
  return answer->action == filter::Action::kAllow ? 0 : kExitExplainDeny;
}

// Checks that --interface is a usable name (a usage error). Returns 0 or the exit code.
int CheckInterfaceName(const Options& options) {
  if (options.interface_name.empty() || options.interface_name.size() > 15 ||
      options.interface_name.find_first_of("/ \t\n:") != std::string::npos) {
    std::fprintf(stderr,
                 "tunnelmesh-agent: --interface \"%s\" is not a valid interface name "
                 "(1 to 15 characters, no '/', ':' or spaces)\n",
                 options.interface_name.c_str());
    return kExitUsage;
  }
  return 0;
}

// Checks, before any interface is touched but after the flags and files were checked (so that
// their own messages show), that no other agent serves the control socket. Returns 0 or the exit
// code.
int CheckAgentSlot(const Options& options) {
  const std::string control_path = ControlSocketPath(options.state_dir, options.interface_name);
  if (ControlRequest(control_path, "ping").ok()) {
    return Fail("another agent already serves " + control_path +
                ": pick another --interface or --state-dir");
  }
  return 0;
}

int Leave(const Options& options) {
  absl::StatusOr<std::string> reply =
      ControlRequest(ControlSocketPath(options.state_dir, options.interface_name), "leave");
  if (!reply.ok()) return Fail("leave: " + std::string(reply.status().message()));
  const nlohmann::json answer = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (answer.is_object() && answer.value("left", false)) {
    std::printf("left the mesh\n");
    return 0;
  }
  const std::string error =
      answer.is_object() && answer.contains("error") && answer["error"].is_string()
          ? answer["error"].get<std::string>()
          : std::string();
  if (error == "unknown request") {
    // Only `join` agents have a coordinator to leave.
    return Fail("leave: the agent on " + options.interface_name +
                " runs from a config file and has no coordinator; stop it instead (Ctrl-C, or "
                "your service manager)");
  }
  if (error.empty()) return Fail("leave: the agent sent an answer this program does not know");
  return Fail("leave: " + error);
}

// Signals are taken synchronously by the main thread; every thread started later inherits the
// mask.
sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

bool SetUpLogging(const Options& options) {
  if (!InitLogging(options.log_level)) {
    std::fprintf(stderr,
                 "tunnelmesh-agent: --log-level \"%s\" is not one of trace, debug, info, "
                 "warn, error\n",
                 options.log_level.c_str());
    return false;
  }
  if (!SetLogFormat(options.log_format)) {
    std::fprintf(stderr, "tunnelmesh-agent: --log-format \"%s\" is not text or json\n",
                 options.log_format.c_str());
    return false;
  }
  return true;
}

int Join(const Options& options, const JoinOptions& join_options) {
  if (!SetUpLogging(options)) return kExitUsage;
  JoinOptions resolved = join_options;
  resolved.interface_name = options.interface_name;
  resolved.state_dir = options.state_dir;
  // Flag checks come before anything is touched.
  absl::StatusOr<CheckedJoinOptions> checked = CheckJoinOptions(resolved);
  if (!checked.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: join: %s\n",
                 std::string(checked.status().message()).c_str());
    return kExitUsage;
  }
  absl::StatusOr<MetricsFlags> metrics =
      CheckMetricsFlags(options.metrics_address, options.no_metrics);
  if (!metrics.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: join: %s\n",
                 std::string(metrics.status().message()).c_str());
    return kExitUsage;
  }
  if (int code = CheckInterfaceName(options); code != 0) return code;
  if (int code = CheckAgentSlot(options); code != 0) return code;
  InitCrypto();
  RaiseFileLimit();
  // Deadlock detection costs a graph lookup per lock on the packet path; the lock order is fixed
  // and documented in lib/noise/device.h and node-agent/agent/agent.h instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const sigset_t signals = BlockStopSignals();
  // cpprestsdk's pool serves only the relay connection here.
  InitCpprestThreadPool(2);
  return RunJoin(resolved, *checked, *metrics, signals);
}

int Run(const Options& options) {
  if (!SetUpLogging(options)) return kExitUsage;
  InitCrypto();
  RaiseFileLimit();
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (int code = CheckInterfaceName(options); code != 0) return code;
  absl::StatusOr<MetricsFlags> metrics =
      CheckMetricsFlags(options.metrics_address, options.no_metrics);
  if (!metrics.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: %s\n", std::string(metrics.status().message()).c_str());
    return kExitUsage;
  }
  // The file first: its mistakes (exit 2) must not hide behind a running agent's socket.
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(options.config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: %s\n", std::string(config.status().message()).c_str());
    // A name server that did not answer may answer later: that is not a mistake in the file.
    return config.status().code() == absl::StatusCode::kUnavailable ? kExitFailure : kExitUsage;
  }
  if (int code = CheckAgentSlot(options); code != 0) return code;
  const sigset_t signals = BlockStopSignals();
  return RunConfig(std::move(*config),
                   {options.config_path, options.interface_name, options.state_dir, *metrics},
                   signals);
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  using tunnelmesh::Options;
  Options options;
  CLI::App app{"tunnelmesh-agent: the TunnelMesh node agent (WireGuard-compatible data plane)"};
  app.set_version_flag("--version",
                       std::string("tunnelmesh-agent ") + tunnelmesh::kTunnelMeshVersion,
                       "print the version and exit");
  app.add_option("--config", options.config_path,
                 "WireGuard INI config (wg-quick format) to run with");
  auto* interface_flag =
      app.add_option("--interface", options.interface_name, "TUN interface name (default tm0)");
  auto* state_flag =
      app.add_option("--state-dir", options.state_dir,
                     "directory for the control socket (default /var/lib/tunnelmesh)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  app.add_option("--log-format", options.log_format, "text (default) or json (one object a line)");
  app.add_option("--metrics-address", options.metrics_address,
                 "HOST:PORT of the Prometheus endpoint /metrics (default 127.0.0.1:7710; when "
                 "that port is taken, a free one)");
  app.add_flag("--no-metrics", options.no_metrics, "run without the metrics endpoint");
  CLI::App* genkey = app.add_subcommand("genkey", "print a new private key (base64)");
  CLI::App* genpsk = app.add_subcommand(
      "genpsk", "print a new random preshared key (base64), for PresharedKey, as wg genpsk");
  CLI::App* pubkey =
      app.add_subcommand("pubkey", "read a private key on stdin, print its public key");
  CLI::App* status = app.add_subcommand("status", "show the running agent's peers and counters");
  status->add_flag("--json", options.json, "print JSON");
  status->add_flag("--check", options.check,
                   "exit 1 unless every agent asked has a mesh address and is connected to its "
                   "coordinator (for probes and `helm test`)");
  status->add_option("--interface", options.interface_name,
                     "interface of the agent to ask (default: every agent of --state-dir)");
  status->add_option("--state-dir", options.state_dir, "state directory of the agent to ask");
  bool status_watch = false;
  std::string status_interval = "2s";
  status->add_flag("--watch", status_watch, "show the status again every --interval until Ctrl-C");
  status->add_option("--interval", status_interval, "how often --watch refreshes (default 2s)");
  tunnelmesh::JoinOptions join_options;
  std::vector<std::string> labels;
  CLI::App* join = app.add_subcommand("join", "join a mesh through its coordinator");
  join->add_option("coordinator", join_options.coordinator,
                   "the coordinator: HOST, HOST:PORT, [IPv6]:PORT or an IPv6 address (port 7700)")
      ->required();
  join->add_option("--token-file", join_options.token_file, "file holding the join token");
  join->add_option("--kubernetes-token-file", join_options.kubernetes_token_file,
                   "instead of --token-file, in a pod: a projected ServiceAccount token for "
                   "audience tunnelmesh (read again at every registration)");
  join->add_option("--mesh", join_options.mesh,
                   "Mesh to join (default: the coordinator's only one)");
  join->add_option("--kind", join_options.kind, "Node, Pod or External (default External)");
  join->add_option("--ca-file", join_options.ca_file,
                   "the coordinator's CA certificate (PEM), instead of fetching and pinning it");
  join->add_option("--name", join_options.name,
                   "member name, made a DNS label (default: this host's name; the coordinator "
                   "adds a suffix when another member holds it)");
  join->add_option("--timeout", join_options.timeout,
                   "give up (exit 1) when not registered within this long, e.g. 30s or 5m "
                   "(default: wait for ever)");
  join->add_option("--label", labels, "KEY=VALUE label, repeatable");
  join->add_option("--alias", join_options.aliases,
                   "another DNS name of this member (ALIAS.mesh), repeatable");
  join->add_option("--state-dir", options.state_dir,
                   "node key, CA pin and control socket (default /var/lib/tunnelmesh)");
  join->add_option("--interface", options.interface_name, "TUN interface name (default tm0)");
  join->add_option("--ca-hash", join_options.ca_hash,
                   "sha256:... of the coordinator's CA, as tunnelmesh-operator prints it");
  join->add_option("--listen-port", join_options.listen_port, "UDP data port (default 51820)");
  join->add_option("--ssh-port", join_options.ssh_port,
                   "TCP port of the SSH path's server, used where UDP is blocked (default 7722)");
  join->add_option("--ssh-proxy-command", join_options.ssh_proxy_command,
                   "dial peers' SSH servers through this command, as OpenSSH's ProxyCommand "
                   "(e.g. 'ssh -W [%h]:%p user@jump')");
  join->add_flag("--no-ssh", join_options.no_ssh,
                 "run no SSH server and reach no peer over SSH (direct UDP, else the relay)");
  join->add_option("--dns-port", join_options.dns_port,
                   "port of the mesh DNS server on the mesh IPs and --dns-listen (default 53)");
  join->add_option("--dns-listen", join_options.dns_listen,
                   "loopback address the mesh DNS server also answers on (default 127.0.0.100)");
  join->add_option("--dns-upstream", join_options.dns_upstream,
                   "IP[:PORT] of a resolver for names outside the mesh (default: refuse them)");
  join->add_flag("--no-dns", join_options.no_dns,
                 "run without the mesh DNS server (implies --no-resolved)");
  join->add_flag("--no-resolved", join_options.no_resolved,
                 "do not register the mesh domain on the interface with systemd-resolved");
  join->add_flag("--advertise-exit", join_options.advertise_exit,
                 "offer this member as an exit peer: forward and masquerade the internet traffic "
                 "of the members a PeerPolicy lets use it (docs/remote-access.md)");
  join->add_option("--exit-peer", join_options.exit_peers,
                   "route this member's internet traffic through exit peer NAME; repeat for "
                   "failover, most preferred first");
  join->add_flag("--exit-allow-lan", join_options.exit_allow_lan,
                 "with an exit peer: keep directly connected networks out of the tunnel (DNS to "
                 "them still goes through it)");
  join->add_flag("--exit-fail-open", join_options.exit_fail_open,
                 "with an exit peer: when none is healthy, send internet traffic out directly "
                 "instead of dropping it");
  join->add_option("--exit-dns", join_options.exit_dns,
                   "with an exit peer: send every DNS query of this host to this resolver IP, "
                   "through the tunnel (default: the host's resolvers, through the tunnel)");
  join->add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  join->add_option("--log-format", options.log_format,
                   "text (default) or json (one object a line)");
  join->add_option("--metrics-address", options.metrics_address,
                   "HOST:PORT of the Prometheus endpoint /metrics (default 127.0.0.1:7710; when "
                   "that port is taken, a free one)");
  join->add_flag("--no-metrics", options.no_metrics, "run without the metrics endpoint");
  CLI::App* leave = app.add_subcommand("leave", "tell the running agent to leave the mesh");
  leave->add_option("--interface", options.interface_name, "interface of the agent");
  leave->add_option("--state-dir", options.state_dir, "state directory of the agent");
  std::string explain_source, explain_destination;
  CLI::App* explain = app.add_subcommand(
      "explain",
      "say whether PeerPolicy allows a flow and which policy (or the Mesh default) decides it. "
      "Exit code: 0 allow, 1 deny, 2 bad arguments, 3 no answer (agent not running, unknown "
      "member, coordinator unreachable)");
  explain->add_option("source", explain_source, "SRC: member name or mesh IP")->required();
  explain
      ->add_option("destination", explain_destination,
                   "DST:PORT/PROTO with PROTO tcp, udp or icmp (any case); DST/icmp takes no "
                   "port; DST is a member name or mesh IP ([fd99::1]:22/tcp for IPv6)")
      ->required();
  explain->add_flag("--json", options.json, "print JSON");
  explain->add_option("--interface", options.interface_name, "interface of the agent to ask");
  explain->add_option("--state-dir", options.state_dir, "state directory of the agent to ask");
  (void)interface_flag;
  (void)state_flag;
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; this is the one place they are caught.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (genkey->parsed()) return tunnelmesh::GenKey();
  if (genpsk->parsed()) return tunnelmesh::GenPsk();
  if (pubkey->parsed()) return tunnelmesh::PubKey();
  if (status->parsed()) {
    if (status_watch) {
      return tunnelmesh::StatusWatch(options, status->count("--interface") > 0, status_interval);
    }
    return tunnelmesh::Status(options, status->count("--interface") > 0);
  }
  if (leave->parsed()) return tunnelmesh::Leave(options);
  if (explain->parsed()) {
    return tunnelmesh::Explain(options, explain_source, explain_destination);
  }
  if (join->parsed()) {
    for (const std::string& label : labels) {
      const size_t eq = label.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "tunnelmesh-agent: --label \"%s\" is not KEY=VALUE\n", label.c_str());
        return 2;
      }
      join_options.labels[label.substr(0, eq)] = label.substr(eq + 1);
    }
    return tunnelmesh::Join(options, join_options);
  }
  if (options.config_path.empty()) {
    std::string names;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    std::fprintf(stderr,
                 "tunnelmesh-agent: nothing to do: give --config FILE, or a subcommand (%s); see "
                 "--help\n",
                 names.c_str());
    return 2;
  }
  return tunnelmesh::Run(options);
}
