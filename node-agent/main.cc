// tunnelmesh-agent: parses flags, wires the components together, handles signals. Subcommands:
//   tunnelmesh-agent --config FILE [--interface NAME] [--state-dir DIR]   run with a wg-quick config
//   tunnelmesh-agent genkey | pubkey                                      keys, as `wg` makes them
//   tunnelmesh-agent status [--json] [--interface NAME] [--state-dir DIR] query a running agent
//   tunnelmesh-agent join HOST[:PORT] --token-file FILE [--name N] [--label K=V ...]
//                    [--state-dir DIR] [--interface NAME] [--ca-hash sha256:...]
//   tunnelmesh-agent leave [--interface NAME] [--state-dir DIR]       leave the mesh and stop
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/log.h"
#include "lib/crypto/keys.h"
#include "lib/noise/device.h"
#include "node-agent/config/agent_config.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/control/join.h"
#include "node-agent/control/status.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/transport/udp_bind.h"
#include "node-agent/netlink/link_configurator.h"
#include "node-agent/transport/relay_client.h"
#include "node-agent/tun/linux_tun_device.h"

namespace tunnelmesh {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Options {
  std::string config_path;
  std::string interface_name = "tm0";
  std::string state_dir = kDefaultStateDir;
  std::string log_level = "info";
  bool json = false;
};

int Fail(const std::string& what) {
  std::fprintf(stderr, "tunnelmesh-agent: %s\n", what.c_str());
  return kExitFailure;
}

int GenKey() {
  InitCrypto();
  std::printf("%s\n", SecretKey::GeneratePrivate().ToBase64().c_str());
  return 0;
}

int PubKey() {
  InitCrypto();
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  absl::StatusOr<SecretKey> key =
      SecretKey::FromBase64(std::string(absl::StripAsciiWhitespace(input)));
  if (!key.ok()) return Fail("pubkey: standard input is not a private key: " + std::string(key.status().message()));
  std::printf("%s\n", DerivePublicKey(*key).ToBase64().c_str());
  return 0;
}

int Status(const Options& options) {
  absl::StatusOr<std::string> reply =
      ControlRequest(ControlSocketPath(options.state_dir, options.interface_name), "status");
  if (!reply.ok()) return Fail(std::string(reply.status().message()));
  if (options.json) {
    std::printf("%s\n", reply->c_str());
    return 0;
  }
  nlohmann::json status = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (status.is_discarded()) return Fail("the agent sent a status that is not JSON");
  std::printf("%s", FormatStatus(status, absl::Now()).c_str());
  return 0;
}

// Checks, before any interface is touched, that --interface is a usable name and that no other
// agent serves its control socket. Returns 0 or the exit code.
int CheckAgentSlot(const Options& options) {
  if (options.interface_name.empty() || options.interface_name.size() > 15 ||
      options.interface_name.find_first_of("/ \t\n:") != std::string::npos) {
    std::fprintf(stderr, "tunnelmesh-agent: --interface \"%s\" is not a valid interface name "
                 "(1 to 15 characters, no '/', ':' or spaces)\n", options.interface_name.c_str());
    return kExitUsage;
  }
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
  if (!reply.ok()) return Fail(std::string(reply.status().message()));
  if (reply->find("\"left\"") == std::string::npos) return Fail("leave: " + *reply);
  std::printf("left the mesh\n");
  return 0;
}

int Join(const Options& options, const JoinOptions& join_options) {
  if (!InitLogging(options.log_level)) {
    std::fprintf(stderr, "tunnelmesh-agent: --log-level \"%s\" is not one of trace, debug, info, "
                 "warn, error\n", options.log_level.c_str());
    return kExitUsage;
  }
  if (int code = CheckAgentSlot(options); code != 0) return code;
  InitCrypto();
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // cpprestsdk's pool serves only the relay connection here.
  InitCpprestThreadPool(2);
  JoinOptions resolved = join_options;
  resolved.interface_name = options.interface_name;
  resolved.state_dir = options.state_dir;
  return RunJoin(resolved, signals);
}

int Run(const Options& options) {
  if (!InitLogging(options.log_level)) {
    std::fprintf(stderr, "tunnelmesh-agent: --log-level \"%s\" is not one of trace, debug, info, "
                 "warn, error\n", options.log_level.c_str());
    return kExitUsage;
  }
  InitCrypto();
  // Deadlock detection costs a graph lookup per lock on the packet path; the lock order is fixed
  // and documented in lib/noise/device.h instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (int code = CheckAgentSlot(options); code != 0) return code;
  const std::string control_path = ControlSocketPath(options.state_dir, options.interface_name);
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(options.config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "tunnelmesh-agent: %s\n", std::string(config.status().message()).c_str());
    // A name server that did not answer may answer later: that is not a mistake in the file.
    return config.status().code() == absl::StatusCode::kUnavailable ? kExitFailure : kExitUsage;
  }
  // Signals are taken synchronously by the main thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const size_t mtu = static_cast<size_t>(config->mtu);
  noise::Device device(config->private_key, mtu);
  auto routes = std::make_shared<RouteTable>();
  std::vector<Prefix> all_allowed;
  for (PeerConfig& peer_config : config->peers) {
    absl::StatusOr<noise::Peer*> peer = device.AddPeer(
        {peer_config.public_key,
         peer_config.preshared_key ? std::move(*peer_config.preshared_key) : SecretKey(),
         peer_config.endpoint, std::chrono::seconds(peer_config.persistent_keepalive)});
    if (!peer.ok()) {
      std::fprintf(stderr, "tunnelmesh-agent: %s:%d: %s\n", options.config_path.c_str(),
                   peer_config.line, std::string(peer.status().message()).c_str());
      return kExitUsage;
    }
    for (const Prefix& prefix : peer_config.allowed_ips) {
      if (prefix.length() == 0) {
        TM_LOG_WARN("{}:{}: AllowedIPs {} routes all traffic into the tunnel, including the "
                    "encrypted packets to the peer's endpoint unless a more specific route to it "
                    "exists; add a host route to the endpoint via your uplink",
                    options.config_path, peer_config.line, prefix.ToString());
      }
      routes->Insert(prefix, *peer);
      all_allowed.push_back(prefix);
    }
  }

  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create(options.interface_name, /*offload=*/true);
  if (!tun.ok()) return Fail("creating interface " + options.interface_name + ": " + std::string(tun.status().message()));
  absl::StatusOr<std::unique_ptr<UdpBind>> socket =
      UdpBind::Open(config->listen_port, /*fall_back_to_any=*/true);
  if (!socket.ok()) return Fail(std::string(socket.status().message()));
  if (config->listen_port != 0 && (*socket)->port() != config->listen_port) {
    TM_LOG_WARN("ListenPort {} is in use; listening on {} instead (peers that dial this port will "
                "not reach us until we contact them; change ListenPort in {})",
                config->listen_port, (*socket)->port(), options.config_path);
  }

  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link =
      LinkConfigurator::Create(options.interface_name);
  if (!link.ok()) return Fail(std::string(link.status().message()));
  absl::Status configured = (*link)->SetMtu(config->mtu);
  for (const InterfaceAddress& address : config->addresses) {
    if (configured.ok()) configured = (*link)->AddAddress(address.address, address.prefix_length);
  }
  if (configured.ok()) configured = (*link)->SetUp();
  if (configured.ok()) configured = (*link)->ReplaceRoutes(all_allowed);
  if (!configured.ok()) return Fail(std::string(configured.message()));

  SystemClock clock;
  Dataplane plane(&device, tun->get(), socket->get(), /*relay=*/nullptr, mtu, &clock);
  plane.SetRoutes(routes);
  if (absl::Status s = plane.Start(); !s.ok()) return Fail(std::string(s.message()));

  SelfInfo self;
  self.name = options.interface_name;
  self.interface_name = options.interface_name;
  self.public_key = device.identity().public_key;
  self.listen_port = (*socket)->port();
  for (const InterfaceAddress& address : config->addresses) self.mesh_ips.push_back(address.address);
  absl::StatusOr<std::unique_ptr<ControlServer>> control = ControlServer::Listen(
      control_path,
      [&](std::string_view request) -> std::string {
        if (request == "ping") return "pong";
        if (request == "status") {
          return BuildStatus(self, device, *plane.routes(), plane.drop_counts()).dump();
        }
        return "{\"error\": \"unknown request\"}";
      });
  if (!control.ok()) {
    plane.Stop();
    return Fail(std::string(control.status().message()));
  }
  TM_LOG_INFO("interface {} up: public_key={} listen_port={} peers={}", options.interface_name,
              self.public_key.Short(), self.listen_port, config->peers.size());

  int exit_code = 0;
  while (true) {
    timespec timeout{0, 200'000'000};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      TM_LOG_INFO("signal {} received: shutting down", sig);
      break;
    }
    if (!plane.running()) {
      TM_LOG_ERROR("data plane failed: {}", plane.failure().ToString());
      exit_code = kExitFailure;
      break;
    }
  }
  control->reset();
  plane.Stop();
  if (absl::Status s = (*link)->Teardown(); !s.ok()) {
    TM_LOG_WARN("removing routes and addresses of {}: {}", options.interface_name, s.ToString());
  }
  return exit_code;
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  using tunnelmesh::Options;
  Options options;
  CLI::App app{"tunnelmesh-agent: the TunnelMesh node agent (WireGuard-compatible data plane)"};
  app.add_option("--config", options.config_path,
                 "WireGuard INI config (wg-quick format) to run with");
  auto* interface_flag =
      app.add_option("--interface", options.interface_name, "TUN interface name (default tm0)");
  auto* state_flag = app.add_option("--state-dir", options.state_dir,
                                    "directory for the control socket (default /var/lib/tunnelmesh)");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  CLI::App* genkey = app.add_subcommand("genkey", "print a new private key (base64)");
  CLI::App* pubkey = app.add_subcommand("pubkey", "read a private key on stdin, print its public key");
  CLI::App* status = app.add_subcommand("status", "show the running agent's peers and counters");
  status->add_flag("--json", options.json, "print JSON");
  status->add_option("--interface", options.interface_name, "interface of the agent to ask");
  status->add_option("--state-dir", options.state_dir, "state directory of the agent to ask");
  tunnelmesh::JoinOptions join_options;
  std::vector<std::string> labels;
  CLI::App* join = app.add_subcommand("join", "join a mesh through its coordinator");
  join->add_option("coordinator", join_options.coordinator, "coordinator HOST[:PORT] (port 7700)")
      ->required();
  join->add_option("--token-file", join_options.token_file, "file holding the join token");
  join->add_option("--kubernetes-token-file", join_options.kubernetes_token_file,
                   "instead of --token-file, in a pod: its ServiceAccount token file");
  join->add_option("--mesh", join_options.mesh, "Mesh to join (default: the coordinator's only one)");
  join->add_option("--kind", join_options.kind, "Node, Pod or External (default External)");
  join->add_option("--ca-file", join_options.ca_file,
                   "the coordinator's CA certificate (PEM), instead of fetching and pinning it");
  join->add_option("--name", join_options.name, "member name (default: derived by the coordinator)");
  join->add_option("--label", labels, "KEY=VALUE label, repeatable");
  join->add_option("--state-dir", options.state_dir,
                   "node key, CA pin and control socket (default /var/lib/tunnelmesh)");
  join->add_option("--interface", options.interface_name, "TUN interface name (default tm0)");
  join->add_option("--ca-hash", join_options.ca_hash,
                   "sha256:... of the coordinator's CA, as tunnelmesh-operator prints it");
  join->add_option("--listen-port", join_options.listen_port, "UDP data port (default 51820)");
  join->add_option("--log-level", options.log_level, "trace, debug, info, warn or error");
  CLI::App* leave = app.add_subcommand("leave", "tell the running agent to leave the mesh");
  leave->add_option("--interface", options.interface_name, "interface of the agent");
  leave->add_option("--state-dir", options.state_dir, "state directory of the agent");
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
  if (pubkey->parsed()) return tunnelmesh::PubKey();
  if (status->parsed()) return tunnelmesh::Status(options);
  if (leave->parsed()) return tunnelmesh::Leave(options);
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
    std::fprintf(stderr, "tunnelmesh-agent: nothing to do: give --config FILE, or a subcommand "
                 "(genkey, pubkey, status); see --help\n");
    return 2;
  }
  return tunnelmesh::Run(options);
}
