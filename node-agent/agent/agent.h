// Agent: the running tunnelmesh-agent, shared by `join` and config mode. It wires the WireGuard
// device, the TUN device, the UDP socket, the link, the data plane, the peer table, the path
// manager and endpoint reporter (join only), the relay (join only), the coordinator session (join
// only) and the control socket, around one control loop.
//
// Threads and what they own:
// - "control" (ControlLoop): all mutable control state: the PeerTable, the PathManager, the
//   EndpointReporter, the coordinator settings, this member's name and mesh IPs. Timers there run
//   the path tick (50 ms), STUN (every 15 s) and endpoint reports. Everything else posts to it.
// - "watch" and "rpc" (CoordinatorSession): registration and the map stream, which post each
//   MapUpdate here; endpoint reports and call-me-maybe RPCs, off the control thread.
// - the control socket's thread: `status` is answered by a Call on the control loop (a copy built
//   there, with a timeout); `leave` makes the Leave RPC itself; `explain` resolves names and asks
//   the filter on the control loop (a Call), and makes the coordinator's Explain RPC itself when
//   another member enforces the flow.
//   `cni ...` (tunnelmesh-cni, join only) copies what it needs from the control loop (a Call),
//   then waits for the pods thread's answer (a Call there).
// - "pods" (pods_loop_, join only): owns the PodAttacher (the pods attached for tunnelmesh-cni and
//   their file); answers the plugin's requests, syncs after every registration (posted by the
//   watch thread's hook) and collects vanished attachments every 30 s, making the pod RPCs there,
//   never on the control loop. `status` reads its snapshot of the attachments.
// - the packet filter (filter_): its rule set is converted and swapped in on the control thread
//   (SetRules), read by both data-plane threads; its counters are atomics read by `status`.
// - the data plane's outbound and inbound threads read the route snapshot (swapped atomically);
//   the inbound thread copies discovery and STUN datagrams and posts them to the control loop.
// - the mesh DNS server (dns_): its own thread answers from the zone the control thread builds
//   after each map update (PublishZone) and stores in it.
// - the systemd-resolved registrar (resolved_, join where resolved runs): PublishZone hands it the
//   link to register (it never waits there); its thread runs resolvectl; Run stops it, which
//   reverts the link, before the interface goes.
// - the WireGuard socket's thread (uapi_, /var/run/wireguard/IFACE.sock): `wg show` is answered
//   by a Call on the control loop; `wg set` is applied there (config mode) or refused (join: the
//   coordinator owns the peers). See agent_uapi.cc.
// - the metrics endpoint's thread (metrics_, lib/metrics/http_server.h): each scrape is a Call on
//   the control loop that renders the status snapshot as Prometheus text (agent_metrics.h).
// - the main thread (Run): signals, leave and refusal, data-plane failure.
// Lock order: none is held across another component's call; the control loop's queue lock and the
// session's lock are leaves.
#pragma once

#include <signal.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/dns/server.h"
#include "lib/filter/filter.h"
#include "lib/metrics/http_server.h"
#include "lib/net/ip.h"
#include "lib/noise/device.h"
#include "node-agent/agent/control_loop.h"
#include "node-agent/agent/coordinator_session.h"
#include "node-agent/agent/dataplane_adapter.h"
#include "node-agent/agent/pod_attacher.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/dns/resolved.h"
#include "node-agent/exit/exit_controller.h"
#include "node-agent/nat/endpoint_reporter.h"
#include "node-agent/nat/path_manager.h"
#include "node-agent/netlink/link_configurator.h"
#include "node-agent/peer/peer_liveness.h"
#include "node-agent/peer/peer_table.h"
#include "node-agent/policy/filter_status.h"
#include "node-agent/policy/installer.h"
#include "node-agent/policy/rule_set.h"
#include "node-agent/transport/relay_bind.h"
#include "node-agent/transport/relay_client.h"
#include "node-agent/transport/ssh_transport.h"
#include "node-agent/transport/udp_bind.h"
#include "node-agent/tun/tun_device.h"
#include "node-agent/uapi/uapi_server.h"

namespace tunnelmesh {

struct AgentParams {
  std::string interface_name = "tm0";
  std::string state_dir;
  SecretKey private_key;
  size_t mtu = 1420;
  std::string name;  // This member's name (config mode: the interface name).
  // The interface's addresses with their prefix lengths.
  std::vector<std::pair<IpAddress, int>> addresses;
  // Routes for allowed IPs outside the mesh's ranges (wg-quick's `Table`): off (false) installs
  // none; otherwise they go into `route_table` (254: the main table).
  bool install_routes = true;
  uint32_t route_table = 254;
  // The mesh's address ranges (join): allowed IPs inside them need no route of their own.
  std::vector<Prefix> mesh_cidrs;
  // The coordinator host as dialed (join): fills in relay and STUN addresses without a host.
  std::string coordinator_host;
  // HOST:PORT of the coordinator as dialed (join), for `status`.
  std::string coordinator_address;
  // The coordinator's CA as pinned (join, PEM): the relay's certificate must lead to it.
  std::string coordinator_ca_pem;
  // The mesh DNS server (join; nullopt: none). Its addresses are served besides the mesh IPs.
  std::optional<DnsServerOptions> dns;
  // Join with `dns`: register the mesh domain on the interface with systemd-resolved where it runs
  // in this network namespace; elsewhere log once how to point the host's resolver at the agent.
  bool register_resolved = false;
  // The Prometheus endpoint (nullopt: --no-metrics). When the address is the default (not
  // `metrics_address_given`) and its port is taken, by another agent on this host most likely,
  // the agent takes a free port and logs it, and any other failure is a warning (the agent runs
  // without metrics); a given address that cannot be used fails Start.
  std::optional<Endpoint> metrics_address;
  bool metrics_address_given = false;
  std::string version;  // For tunnelmesh_agent_info.
  // Exit peers (node-agent/exit/exit_controller.h; nullopt: no exit role, e.g. a config file
  // without a default route). `full_tunnel`: config mode with `AllowedIPs = 0.0.0.0/0` (or ::/0):
  // the kernel routes everything into the tunnel by policy routing, not by a default route.
  std::optional<ExitOptions> exit;
  bool full_tunnel = false;
};

class Agent {
 public:
  // Creates the device and the peer table; no I/O yet.
  explicit Agent(AgentParams params);
  // Stops everything still running (Run does it in order).
  ~Agent();

  noise::Device& device() { return *device_; }
  // Config mode, before BringUp: a config file's peer.
  [[nodiscard]] absl::Status AddStaticPeer(const StaticPeerConfig& config);

  // Configures the link (MTU, addresses, up) and creates the data plane over `tun` and `socket`.
  // Errors name what failed.
  [[nodiscard]] absl::Status BringUp(std::unique_ptr<TunDevice> tun,
                                     std::unique_ptr<UdpBind> socket);
  // Config mode, after BringUp: publishes the static peers' routes (a link error fails).
  [[nodiscard]] absl::Status PublishStaticRoutes();
  // Join, after BringUp and before Start: follows the coordinator through `session` (registered
  // already with `registration`): discovery, STUN, endpoint reports, the relay.
  void FollowCoordinator(std::unique_ptr<CoordinatorSession> session,
                         const coord::RegisterResponse& registration);
  // Starts the data plane, the control loop and the control socket (and the session's threads).
  [[nodiscard]] absl::Status Start();
  // Waits for a signal in `signals`, a leave, a refusal or a data-plane failure, then shuts down.
  // Returns the exit code. `member`: the log says the member stays in the mesh.
  int Run(const sigset_t& signals, bool member);

  // The `status --json` report, built on the control thread (any other thread; nullopt when the
  // loop did not answer within `timeout`).
  std::optional<std::string> StatusJson(absl::Duration timeout);
  // The Prometheus text (agent_metrics.h), built on the control thread like the status (any other
  // thread; nullopt when the loop did not answer within `timeout`).
  std::optional<std::string> MetricsText(absl::Duration timeout);

  // Hooks for the coordinator session's threads: post to the control loop.
  // False when the control loop's queue is full (the update was not taken).
  [[nodiscard]] bool PostMapUpdate(coord::MapUpdate update);
  void PostRegistered(coord::RegisterResponse response);
  void PostDisconnected(const absl::Status& why);
  void OnRefused() { refused_ = true; }

  // Join, before BringUp: the SSH path's transport, started already (run.cc). The agent tells it
  // the peers, and stops it before its own parts go.
  void UseSsh(std::unique_ptr<SshTransport> ssh) { ssh_ = std::move(ssh); }
  // A frame from an SSH connection (on that connection's thread): discovery goes to the control
  // loop as a copy, WireGuard to the peer-addressed Bind.
  void OnSshFrame(const PublicKey& peer, const Endpoint& remote, absl::Span<const uint8_t> frame);

 private:
  // Forwards the peer table's outside-mesh routes to the link once it exists.
  class LinkRoutes final : public RouteInstaller {
   public:
    absl::Status ReplaceRoutes(absl::Span<const Prefix> prefixes) override {
      return link == nullptr || !enabled ? absl::OkStatus() : link->ReplaceRoutes(prefixes);
    }
    LinkConfigurator* link = nullptr;
    bool enabled = true;  // False with `Table = off`.
  };
  // With a full tunnel the exit's policy routing carries the default routes: the link gets none.
  class NoDefaultRoutes final : public RouteInstaller {
   public:
    explicit NoDefaultRoutes(RouteInstaller* next) : next_(next) {}
    absl::Status ReplaceRoutes(absl::Span<const Prefix> prefixes) override;
    bool enabled = false;

   private:
    RouteInstaller* const next_;
  };

  // What `explain` does next: answer now (this member enforces the flow), ask the coordinator, or
  // report an error.
  struct ExplainPlan {
    std::string error;
    std::optional<policy::ExplainAnswer> answer;
    coord::ExplainRequest remote;
  };

  // All on the control thread.
  void ApplyUpdate(const coord::MapUpdate& update);
  ExplainPlan PlanExplain(const policy::ExplainQuery& query);
  // A member name or mesh IP as text -> an address (preferring `family` when a name has several).
  std::optional<IpAddress> ResolveMember(const std::string& text,
                                         std::optional<IpAddress::Family> family) const;
  std::string HandleExplain(std::string_view request);
  void ApplyRegistration(const coord::RegisterResponse& response);
  // Builds the DNS zone from the map as it stands and hands it to the DNS server.
  void PublishZone();
  // Hands the link to register to resolved_ or, once, logs how to point the host's resolver at
  // the agent instead.
  void PublishResolved();
  void PathTick();
  // Samples every peer's counters and path for liveness_ (every second).
  void SampleLiveness();
  void SendStun();
  void MaybeReport();
  // Exit peers: the agent's UDP socket is marked and stale kernel state removed (BringUp); the
  // coordinator, relay and STUN addresses are kept out of the tunnel (after each registration).
  [[nodiscard]] absl::Status StartExit();
  void UpdateExitServices();
  void OnForeignDatagram(const std::vector<uint8_t>& datagram, const Endpoint& from, bool disco);
  // Tells the SSH transport the peers that publish SSH, and the path manager which offer it.
  void PublishSshPeers(const std::vector<PublicKey>& upserted);
  nlohmann::json BuildStatus();
  std::string BuildMetricsText();
  [[nodiscard]] absl::Status StartMetrics();
  std::string ResolveServiceHost(const std::string& address) const;
  void ConnectRelay();
  std::string HandleControlRequest(std::string_view request);
  // "cni " + JSON (node-agent/cni/attach_protocol.h), on the control socket's thread.
  std::string HandleCni(std::string_view json);
  // On the control thread: what a pod request needs of its state.
  PodRequestContext BuildPodContext() const;
  // Join, in Start: loads the pod attachments (a bad file fails Start) and starts the pods thread.
  [[nodiscard]] absl::Status StartPods();
  // The WireGuard socket (agent_uapi.cc): HandleUapi on the socket's thread, the rest on the
  // control thread.
  std::string HandleUapi(uapi::Request request);
  uapi::DeviceState BuildUapiState() const;
  absl::Status ApplyUapiSet(const uapi::SetRequest& set);

  const AgentParams params_;
  SystemClock clock_;
  std::unique_ptr<noise::Device> device_;
  LinkRoutes link_routes_;
  NoDefaultRoutes route_filter_{&link_routes_};
  // Control-thread state (before Start: the constructing thread's).
  std::unique_ptr<PeerTable> peers_;
  std::unique_ptr<PathManager> paths_;
  std::unique_ptr<EndpointReporter> reporter_;
  std::string name_;
  std::vector<std::string> aliases_;  // This member's DNS aliases, as the coordinator holds them.
  std::vector<IpAddress> mesh_ips_;
  coord::Settings settings_;
  uint64_t map_version_ = 0;
  bool coordinated_ = false;
  PeerLiveness liveness_;
  // The watch stream to the coordinator (join): up since a map arrived, down since it ended (and
  // why), for `status`.
  bool coordinator_connected_ = false;
  absl::Time coordinator_changed_ = absl::InfinitePast();
  std::string coordinator_error_;
  // Consulted by both data-plane threads; rule sets swapped in by rule_sets_ (control thread).
  // Declared before plane_ so it outlives the data plane.
  filter::Filter filter_;
  policy::RuleSetInstaller rule_sets_{&filter_};

  std::unique_ptr<TunDevice> tun_;
  std::unique_ptr<UdpBind> socket_;
  // The SSH path (join without --no-ssh; else null). Stopped first in Run and the destructor.
  std::unique_ptr<SshTransport> ssh_;
  // Carries datagrams for peers on the relay path (and the SSH path); its send function uses
  // relay_, which exists before the data plane starts (or never) and is reset only after it stops.
  std::unique_ptr<RelayBind> relay_bind_;
  std::unique_ptr<LinkConfigurator> link_;
  std::unique_ptr<Dataplane> plane_;
  std::unique_ptr<DataplaneAdapter> adapter_;
  std::unique_ptr<RelayClient> relay_;
  ControlLoop loop_{&clock_};
  std::unique_ptr<CoordinatorSession> session_;
  // The pods thread and what it owns (join only; pods_ is set before either thread starts).
  ControlLoop pods_loop_{&clock_, 256};
  std::unique_ptr<PodAttacher> pods_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<uapi::UapiServer> uapi_;
  // Set in Start before the control loop runs; its thread asks the loop for each scrape.
  std::unique_ptr<metrics::MetricsServer> metrics_;
  // Its own thread; zones are published to it from the control thread.
  std::unique_ptr<DnsServer> dns_;
  // What Start found (before the loop's first PublishZone) and the registrar, when resolved runs
  // here; resolved_advice_logged_ is the control thread's.
  ResolvedDetection resolved_detection_;
  std::unique_ptr<ResolvedRegistrar> resolved_;
  bool resolved_advice_logged_ = false;
  // The exit-peer role (control thread; nullopt params_.exit: none).
  std::unique_ptr<ExitController> exit_;

  std::atomic<bool> report_in_flight_{false};
  std::atomic<bool> leave_requested_{false};
  std::atomic<bool> refused_{false};
};

}  // namespace tunnelmesh
