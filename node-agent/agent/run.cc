#include "node-agent/agent/run.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>

#include "lib/base/backoff.h"
#include "lib/base/file.h"
#include "lib/base/log.h"
#include "lib/base/retry_log.h"
#include "node-agent/agent/agent.h"
#include "node-agent/control/coordinator_client.h"
#include "node-agent/tun/linux_tun_device.h"
#include "proto/member_kind.h"
#include "tm_version.h"

namespace tunnelmesh {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Waits `delay` while taking the blocked signals (the main thread owns them before the agent
// runs); false when SIGINT or SIGTERM arrived.
bool WaitOrSignal(const sigset_t& signals, std::chrono::milliseconds delay) {
  timespec timeout{delay.count() / 1000, (delay.count() % 1000) * 1'000'000};
  int sig = sigtimedwait(&signals, nullptr, &timeout);
  if (sig == SIGINT || sig == SIGTERM) {
    TM_LOG_INFO("signal {} received before joining: stopping", sig);
    return false;
  }
  return true;
}

// When join gives up: --timeout after the start; none without the flag.
struct JoinDeadline {
  std::optional<absl::Time> at;
  absl::Duration timeout;
  bool passed() const { return at && absl::Now() >= *at; }
  // `delay`, shortened so that the wait ends at the deadline.
  std::chrono::milliseconds Clip(std::chrono::milliseconds delay) const {
    if (!at) return delay;
    const auto left = absl::ToChronoMilliseconds(*at - absl::Now());
    return std::clamp(left, std::chrono::milliseconds(1), delay);
  }
  void Report(const HostPort& coordinator, const std::string& waited_for,
              const std::string& last_error) const {
    TM_LOG_ERROR("gave up after {} (--timeout): {} the coordinator at {}:{}; last error: {}",
                 absl::FormatDuration(timeout), waited_for, coordinator.host, coordinator.port,
                 last_error);
  }
};

// Fetches and checks the coordinator's CA until it answers; nullopt when told to stop, when the
// CA does not match, or when --timeout passed (logged).
std::optional<CoordinatorCa> FetchCa(const JoinOptions& options, const HostPort& coordinator,
                                     const sigset_t& signals, const JoinDeadline& deadline,
                                     int* exit_code) {
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::milliseconds(600),
                  std::random_device{}(), 0.5);
  RetryLog retry_log(std::random_device{}());
  while (true) {
    absl::StatusOr<CoordinatorCa> ca =
        FetchCoordinatorCa(coordinator.host, coordinator.port, options.ca_hash,
                           options.state_dir + "/coordinator-ca.pem");
    if (ca.ok()) {
      if (std::optional<RetryLog::Outage> outage = retry_log.OnSuccess(absl::Now())) {
        TM_LOG_INFO("reached the coordinator after {} failed attempts over {}", outage->attempts,
                    FormatOutageDuration(outage->elapsed));
      }
      return *ca;
    }
    if (ca.status().code() == absl::StatusCode::kPermissionDenied) {
      TM_LOG_ERROR("{}", std::string(ca.status().message()));
      *exit_code = kExitFailure;
      return std::nullopt;
    }
    const std::string why(ca.status().message());
    switch (retry_log.OnFailure(absl::Now())) {
      case RetryLog::Say::kFirst:
        TM_LOG_WARN("{}; retrying (a summary follows while it lasts)", why);
        break;
      case RetryLog::Say::kSummary:
        TM_LOG_WARN("still cannot reach the coordinator after {} attempts over {}: {}",
                    retry_log.attempts(), FormatOutageDuration(retry_log.elapsed(absl::Now())),
                    why);
        break;
      case RetryLog::Say::kNothing:
        break;
    }
    if (deadline.passed()) {
      deadline.Report(coordinator, "could not fetch the CA certificate of", why);
      *exit_code = kExitFailure;
      return std::nullopt;
    }
    if (!WaitOrSignal(signals, deadline.Clip(backoff.Next()))) {
      *exit_code = 0;
      return std::nullopt;
    }
  }
}

}  // namespace

int RunJoin(const JoinOptions& options, const CheckedJoinOptions& checked,
            const MetricsFlags& metrics, const sigset_t& signals) {
  absl::StatusOr<SecretKey> key = LoadOrCreateNodeKey(options.state_dir);
  if (!key.ok()) {
    TM_LOG_ERROR("{}", std::string(key.status().message()));
    return kExitFailure;
  }
  const PublicKey public_key = DerivePublicKey(*key);
  const HostPort& coordinator = checked.coordinator;
  JoinDeadline deadline;
  if (checked.timeout) {
    deadline.at = absl::Now() + *checked.timeout;
    deadline.timeout = *checked.timeout;
  }
  // Without --name, the member asks to be named after this host.
  std::string name = options.name;
  if (name.empty()) {
    char host_name[256] = {};
    if (gethostname(host_name, sizeof(host_name) - 1) == 0) name = DefaultMemberName(host_name);
  }
  TM_LOG_INFO("connecting to coordinator {}:{}", coordinator.host, coordinator.port);
  std::string ca_pem = checked.ca_pem;
  std::optional<TokenCheck> token_check;
  const std::string pin_path = options.state_dir + "/coordinator-ca.pem";
  if (ca_pem.empty()) {
    int exit_code = 0;
    std::optional<CoordinatorCa> ca = FetchCa(options, coordinator, signals, deadline, &exit_code);
    if (!ca) return exit_code;
    ca_pem = ca->pem;
    if (ca->unverified) {
      if (checked.join_token.empty()) {
        TM_LOG_ERROR(
            "the coordinator's CA {} is not pinned and a ServiceAccount token is not sent to an "
            "unverified coordinator: pass --ca-file or --ca-hash",
            ca->hash);
        return kExitFailure;
      }
      TM_LOG_WARN(
          "the coordinator's CA {} is not pinned yet: it must prove that it knows the join token "
          "before the token is sent, and is pinned in {} once registered; pass --ca-hash to "
          "verify it instead",
          ca->hash, pin_path);
      token_check = TokenCheck{checked.join_token, ca->hash};
    }
  }
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun =
      LinuxTunDevice::Create(options.interface_name, /*offload=*/true);
  if (!tun.ok()) {
    TM_LOG_ERROR("creating interface {}: {}", options.interface_name,
                 std::string(tun.status().message()));
    return kExitFailure;
  }
  absl::StatusOr<std::unique_ptr<UdpBind>> socket =
      UdpBind::Open(options.listen_port, /*fall_back_to_any=*/true);
  if (!socket.ok()) {
    TM_LOG_ERROR("{}", std::string(socket.status().message()));
    return kExitFailure;
  }
  const uint16_t port = (*socket)->port();
  if (options.listen_port != 0 && port != options.listen_port) {
    TM_LOG_INFO("UDP port {} is in use; using {} (the coordinator tells peers)",
                options.listen_port, port);
  }

  // The session's hooks reach the agent once it exists; they run only after Start.
  Agent* agent_slot = nullptr;
  // The SSH path's server listens before registering, which publishes its key and port. Frames
  // arrive only once the agent has told it the peers (after agent_slot is set).
  std::unique_ptr<SshTransport> ssh;
  if (!options.no_ssh) {
    SshTransport::Options ssh_options;
    ssh_options.port = options.ssh_port;
    ssh_options.fall_back_to_any = true;
    ssh_options.proxy_command = options.ssh_proxy_command;
    ssh =
        std::make_unique<SshTransport>(*key, ssh_options,
                                       [&agent_slot](const PublicKey& peer, const Endpoint& remote,
                                                     absl::Span<const uint8_t> frame) {
                                         agent_slot->OnSshFrame(peer, remote, frame);
                                       });
    if (absl::Status s = ssh->Start(); !s.ok()) {
      TM_LOG_ERROR("{}", std::string(s.message()));
      return kExitFailure;
    }
    TM_LOG_INFO("SSH path: listening on TCP port {}", ssh->port());
  }
  const PublicKey ssh_key = ssh ? ssh->public_key() : PublicKey();
  const uint16_t ssh_port = ssh ? ssh->port() : 0;
  CoordinatorSession::Hooks hooks;
  hooks.make_request = [&options, &checked, &name, public_key, port, ssh_key,
                        ssh_port]() -> absl::StatusOr<coord::RegisterRequest> {
    coord::RegisterRequest request;
    if (!options.kubernetes_token_file.empty()) {
      absl::StatusOr<std::string> token = ReadTrimmedFile(options.kubernetes_token_file);
      if (!token.ok() || token->empty()) {
        return absl::UnavailableError("cannot read --kubernetes-token-file " +
                                      options.kubernetes_token_file);
      }
      request.set_kubernetes_token(*token);
    } else {
      request.set_join_token(checked.join_token);
    }
    request.set_public_key(PublicKeyBytes(public_key));
    request.set_name(name);
    request.set_mesh(options.mesh);
    for (const auto& [k, v] : options.labels) (*request.mutable_labels())[k] = v;
    for (const std::string& alias : options.aliases) request.add_aliases(alias);
    request.set_kind(*MemberKindFromName(options.kind));
    request.set_listen_port(port);
    if (options.advertise_exit || !options.exit_peers.empty()) {
      request.mutable_exit()->set_advertise(options.advertise_exit);
      for (const std::string& exit : options.exit_peers) request.mutable_exit()->add_use(exit);
    }
    if (ssh_port != 0) {
      request.set_ssh_public_key(PublicKeyBytes(ssh_key));
      request.set_ssh_port(ssh_port);
    }
    return request;
  };
  hooks.on_registered = [&agent_slot](const coord::RegisterResponse& response) {
    agent_slot->PostRegistered(response);
  };
  hooks.on_update = [&agent_slot](coord::MapUpdate update) {
    return agent_slot->PostMapUpdate(std::move(update));
  };
  hooks.on_refused = [&agent_slot](const absl::Status&) { agent_slot->OnRefused(); };
  hooks.on_disconnected = [&agent_slot](const absl::Status& why) {
    agent_slot->PostDisconnected(why);
  };
  const std::string host = coordinator.host.find(':') != std::string::npos
                               ? "[" + coordinator.host + "]"
                               : coordinator.host;
  auto session = std::make_unique<CoordinatorSession>(host + ":" + std::to_string(coordinator.port),
                                                      ca_pem, key->Clone(), token_check,
                                                      std::move(hooks), std::random_device{}());
  bool timed_out = false;
  absl::StatusOr<coord::RegisterResponse> registration =
      session->RegisterFirst([&](std::chrono::milliseconds delay) {
        if (deadline.passed()) {
          timed_out = true;
          return false;
        }
        return WaitOrSignal(signals, deadline.Clip(delay));
      });
  if (!registration.ok()) {
    if (timed_out) {
      deadline.Report(coordinator, "not registered with",
                      std::string(registration.status().message()));
      return kExitFailure;
    }
    if (registration.status().code() == absl::StatusCode::kCancelled) return 0;
    TM_LOG_ERROR("the coordinator refused to register this member: {}",
                 std::string(registration.status().message()));
    return kExitFailure;
  }
  if (checked.ca_pem.empty()) {
    if (absl::Status s = PinCoordinatorCa(pin_path, ca_pem); !s.ok()) {
      TM_LOG_WARN("{}", std::string(s.message()));
    } else if (token_check) {
      TM_LOG_INFO("pinned the coordinator's CA {} in {}", token_check->ca_hash, pin_path);
    }
  }

  AgentParams params;
  params.interface_name = options.interface_name;
  params.state_dir = options.state_dir;
  params.private_key = std::move(*key);
  const uint32_t mtu = registration->settings().mtu();
  params.mtu = mtu >= 1280 ? mtu : 1420;
  params.name = registration->name();
  for (const std::string& c : registration->mesh_cidrs()) {
    absl::StatusOr<Prefix> parsed = Prefix::Parse(c);
    if (parsed.ok()) params.mesh_cidrs.push_back(*parsed);
  }
  for (const std::string& text : registration->mesh_ips()) {
    absl::StatusOr<IpAddress> ip = IpAddress::Parse(text);
    if (!ip.ok()) continue;
    int length = ip->bit_length();
    for (const Prefix& cidr : params.mesh_cidrs) {
      if (cidr.Contains(*ip)) length = cidr.length();
    }
    params.addresses.emplace_back(*ip, length);
  }
  params.coordinator_host = coordinator.host;
  params.coordinator_address = host + ":" + std::to_string(coordinator.port);
  params.coordinator_ca_pem = ca_pem;
  if (!options.no_dns) {
    params.dns = DnsServerOptions{{*checked.dns_listen}, options.dns_port, checked.dns_upstream};
    params.register_resolved = checked.register_resolved;
  }
  params.metrics_address = metrics.address;
  params.metrics_address_given = metrics.given;
  params.version = kTunnelMeshVersion;
  params.exit = ExitOptions{options.exit_allow_lan, options.exit_fail_open, checked.exit_dns,
                            !options.exit_peers.empty()};
  Agent agent(std::move(params));
  agent_slot = &agent;
  if (ssh) agent.UseSsh(std::move(ssh));
  if (absl::Status s = agent.BringUp(std::move(*tun), std::move(*socket)); !s.ok()) {
    TM_LOG_ERROR("{}", std::string(s.message()));
    return kExitFailure;
  }
  agent.FollowCoordinator(std::move(session), *registration);
  if (absl::Status s = agent.Start(); !s.ok()) {
    TM_LOG_ERROR("{}", std::string(s.message()));
    return kExitFailure;
  }
  TM_LOG_INFO("interface {} up; following the network map", options.interface_name);
  return agent.Run(signals, /*member=*/true);
}

int RunConfig(AgentConfig config, const ConfigRunOptions& options, const sigset_t& signals) {
  AgentParams params;
  params.interface_name = options.interface_name;
  params.state_dir = options.state_dir;
  params.private_key = config.private_key.Clone();
  params.mtu = static_cast<size_t>(config.mtu);
  params.name = options.interface_name;
  params.install_routes = config.table_mode != TableMode::kOff;
  if (config.table_mode == TableMode::kId) params.route_table = config.table_id;
  for (const InterfaceAddress& address : config.addresses) {
    params.addresses.emplace_back(address.address, address.prefix_length);
  }
  params.metrics_address = options.metrics.address;
  params.metrics_address_given = options.metrics.given;
  params.version = kTunnelMeshVersion;
  // wg-quick's full tunnel: a default route in the main table would carry the encrypted packets
  // too, so the default routes go into a table of their own behind policy rules (as wg-quick does).
  // With `Table = N` the routes go into table N as given, and with `Table = off` nowhere.
  for (const PeerConfig& peer : config.peers) {
    for (const Prefix& prefix : peer.allowed_ips) {
      if (prefix.length() == 0 && config.table_mode == TableMode::kAuto) {
        params.full_tunnel = true;
        params.exit = ExitOptions{};
      }
    }
  }
  Agent agent(std::move(params));
  for (PeerConfig& peer : config.peers) {
    StaticPeerConfig static_peer;
    static_peer.public_key = peer.public_key;
    if (peer.preshared_key) static_peer.preshared_key = std::move(*peer.preshared_key);
    static_peer.endpoint = peer.endpoint;
    static_peer.persistent_keepalive = std::chrono::seconds(peer.persistent_keepalive);
    static_peer.allowed = peer.allowed_ips;
    if (absl::Status s = agent.AddStaticPeer(static_peer); !s.ok()) {
      std::fprintf(stderr, "tunnelmesh-agent: %s:%d: %s\n", options.config_path.c_str(), peer.line,
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "tunnelmesh-agent: %s\n", what.c_str());
    return kExitFailure;
  };
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun =
      LinuxTunDevice::Create(options.interface_name, /*offload=*/true);
  if (!tun.ok()) {
    return fail("creating interface " + options.interface_name + ": " +
                std::string(tun.status().message()));
  }
  absl::StatusOr<std::unique_ptr<UdpBind>> socket =
      UdpBind::Open(config.listen_port, /*fall_back_to_any=*/true);
  if (!socket.ok()) return fail(std::string(socket.status().message()));
  const uint16_t port = (*socket)->port();
  if (config.listen_port != 0 && port != config.listen_port) {
    TM_LOG_WARN(
        "ListenPort {} is in use; listening on {} instead (peers that dial this port will "
        "not reach us until we contact them; change ListenPort in {})",
        config.listen_port, port, options.config_path);
  }
  if (absl::Status s = agent.BringUp(std::move(*tun), std::move(*socket)); !s.ok()) {
    return fail(std::string(s.message()));
  }
  if (absl::Status s = agent.PublishStaticRoutes(); !s.ok()) {
    return fail(std::string(s.message()));
  }
  if (absl::Status s = agent.Start(); !s.ok()) return fail(std::string(s.message()));
  TM_LOG_INFO("interface {} up: public_key={} listen_port={} peers={}", options.interface_name,
              agent.device().identity().public_key.Short(), port, config.peers.size());
  return agent.Run(signals, /*member=*/false);
}

}  // namespace tunnelmesh
