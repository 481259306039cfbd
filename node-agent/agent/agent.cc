#include "node-agent/agent/agent.h"

#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include "lib/base/log.h"
#include "lib/disco/message.h"
#include "lib/disco/path_selector.h"
#include "lib/dns/mesh_zone.h"
#include "lib/wire/stun.h"
#include "node-agent/agent/agent_metrics.h"
#include "node-agent/agent/agent_status.h"
#include "node-agent/cni/attach_protocol.h"

namespace tunnelmesh {
namespace {

constexpr int kExitFailure = 1;
constexpr auto kPathTickInterval = std::chrono::milliseconds(50);
constexpr auto kStunInterval = std::chrono::seconds(15);
constexpr auto kLivenessInterval = std::chrono::seconds(1);
// How long `status` waits for the control loop before answering with an error.
constexpr absl::Duration kStatusTimeout = absl::Seconds(5);
// Attachments whose host interface vanished are collected this often (and at start).
constexpr auto kPodCollectInterval = std::chrono::seconds(30);
// How long a plugin's request waits for the pods thread (busy with other pods' RPCs, 5 s each at
// most) before it is told to try later.
constexpr absl::Duration kPodRequestTimeout = absl::Seconds(20);
// Foreign datagrams larger than this are neither discovery nor STUN replies we asked for.
constexpr size_t kMaxForeignDatagram = 1500;

}  // namespace

Agent::Agent(AgentParams params)
    : params_(std::move(params)),
      device_(std::make_unique<noise::Device>(params_.private_key, params_.mtu)),
      name_(params_.name) {
  for (const auto& [ip, length] : params_.addresses) mesh_ips_.push_back(ip);
  peers_ = std::make_unique<PeerTable>(
      device_.get(), device_->identity().public_key, &route_filter_,
      [this](std::shared_ptr<const RouteTable> routes) {
        if (adapter_) adapter_->PublishRoutes(std::move(routes));
      },
      &clock_);
  peers_->SetMeshCidrs(params_.mesh_cidrs);
  // Test hook (e2e/netns/psk_rollover.sh): renew sessions every few seconds instead of every
  // 120 s, so that a test sees handshakes while the preshared key rolls over. Not for production.
  if (const char* rekey = std::getenv("TUNNELMESH_TEST_REKEY_AFTER_SECONDS"); rekey != nullptr) {
    const int seconds = std::atoi(rekey);
    if (seconds > 0) {
      device_->set_rekey_after_time_for_testing(std::chrono::seconds(seconds));
      TM_LOG_WARN("TUNNELMESH_TEST_REKEY_AFTER_SECONDS={}: sessions renew every {} s (tests only)",
                  seconds, seconds);
    }
  }
}

Agent::~Agent() {
  if (ssh_) ssh_->Stop();
  metrics_.reset();
  if (session_) session_->Stop();
  control_.reset();
  pods_loop_.Stop();
  uapi_.reset();
  loop_.Stop();
  if (exit_) exit_->Stop();
  resolved_.reset();  // Reverts the link if Run did not.
  if (plane_) plane_->Stop();
}

absl::Status Agent::AddStaticPeer(const StaticPeerConfig& config) {
  return peers_->AddStatic(config);
}

absl::Status Agent::BringUp(std::unique_ptr<TunDevice> tun, std::unique_ptr<UdpBind> socket) {
  tun_ = std::move(tun);
  socket_ = std::move(socket);
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link =
      LinkConfigurator::Create(params_.interface_name);
  if (!link.ok()) return link.status();
  link_ = std::move(*link);
  link_->SetRouteTable(params_.route_table);
  link_routes_.enabled = params_.install_routes;
  absl::Status configured = link_->SetMtu(static_cast<int>(params_.mtu));
  for (const auto& [ip, length] : params_.addresses) {
    if (configured.ok()) configured = link_->AddAddress(ip, length);
  }
  if (configured.ok()) configured = link_->SetUp();
  if (!configured.ok()) return configured;
  link_routes_.link = link_.get();
  if (absl::Status s = StartExit(); !s.ok()) return s;
  RelayBind::SendFrame send_ssh;
  if (ssh_) {
    send_ssh = [ssh = ssh_.get()](const PublicKey& destination, absl::Span<const uint8_t> frame) {
      return ssh->Send(destination, frame);
    };
  }
  relay_bind_ = std::make_unique<RelayBind>(
      [this](const PublicKey& destination, absl::Span<const uint8_t> frame) {
        return relay_ != nullptr && relay_->Send(destination, frame);
      },
      RelayBind::Options(), std::move(send_ssh));
  plane_ = std::make_unique<Dataplane>(device_.get(), tun_.get(), socket_.get(), relay_bind_.get(),
                                       params_.mtu, &clock_);
  // Off (everything passes) until the coordinator sends a rule set; a config-file agent never
  // gets one.
  plane_->SetFilter(&filter_);
  adapter_ = std::make_unique<DataplaneAdapter>(plane_.get(), device_.get(), relay_bind_.get(),
                                                ssh_.get());
  adapter_->PublishRoutes(peers_->routes());
  return absl::OkStatus();
}

absl::Status Agent::PublishStaticRoutes() { return peers_->Publish(); }

void Agent::FollowCoordinator(std::unique_ptr<CoordinatorSession> session,
                              const coord::RegisterResponse& registration) {
  session_ = std::move(session);
  coordinated_ = true;
  name_ = registration.name();
  aliases_.assign(registration.aliases().begin(), registration.aliases().end());
  settings_ = registration.settings();
  peers_->SetPresharedKeys(settings_.preshared_key(), settings_.accepted_preshared_key());
  UpdateExitServices();
  paths_ = std::make_unique<PathManager>(params_.private_key, device_->identity().public_key,
                                         adapter_.get());
  reporter_ = std::make_unique<EndpointReporter>(adapter_.get());
  // On the inbound data thread: copy and post, never handle here (no control state, no lock).
  adapter_->SetForeignHandler([this](absl::Span<const uint8_t> datagram, const Endpoint& from) {
    const bool disco = disco::IsDiscoMessage(datagram);
    if (!disco && !stun::LooksLikeStun(datagram)) return false;
    if (datagram.size() > kMaxForeignDatagram) return true;
    std::vector<uint8_t> copy(datagram.begin(), datagram.end());
    // A full queue drops it (counted by the loop); the peer or the STUN interval resends.
    loop_.Post(
        [this, copy = std::move(copy), from, disco] { OnForeignDatagram(copy, from, disco); });
    return true;
  });
  ConnectRelay();
  loop_.RunEvery(kPathTickInterval, [this] { PathTick(); });
  loop_.RunEvery(kStunInterval, [this] { SendStun(); });
  loop_.Post([this] { SendStun(); });
}

std::string Agent::ResolveServiceHost(const std::string& address) const {
  // The coordinator leaves the host out when members should use the one they dialed.
  const std::string& dialed = params_.coordinator_host;
  const std::string host = dialed.find(':') != std::string::npos ? "[" + dialed + "]" : dialed;
  if (!address.empty() && address.front() == ':') return host + address;
  if (address.rfind("wss://:", 0) == 0) return "wss://" + host + address.substr(6);
  return address;
}

void Agent::ConnectRelay() {
  const std::string url = ResolveServiceHost(settings_.relay_url());
  PublicKey server_key;
  if (settings_.relay_public_key().size() == kKeySize) {
    std::memcpy(server_key.bytes.data(), settings_.relay_public_key().data(), kKeySize);
  }
  if (url.empty() || server_key.IsZero()) {
    TM_LOG_WARN("the coordinator offers no relay: peers behind strict NATs will be unreachable");
    return;
  }
  RelayClient::Options relay_options;
  relay_options.trusted_ca_pem = params_.coordinator_ca_pem;
  relay_ = std::make_unique<RelayClient>(relay_options);
  adapter_->WireRelay(relay_.get());
  if (absl::Status s =
          relay_->Connect(url, params_.private_key, device_->identity().public_key, server_key);
      !s.ok()) {
    TM_LOG_WARN("relay {}: {}", url, std::string(s.message()));
  } else {
    TM_LOG_INFO("relay {} in use for peers without a direct path", url);
  }
}

absl::Status Agent::StartPods() {
  absl::StatusOr<PodAttachmentStore> store =
      PodAttachmentStore::Load(PodAttachmentsPath(params_.state_dir, params_.interface_name));
  if (!store.ok()) return store.status();
  if (store->size() > 0) {
    TM_LOG_INFO("{} pods attached before this start (in {}): stating them to the coordinator",
                store->size(), store->path());
  }
  // Test hook (e2e/netns/pods_attach.sh): collect every few seconds, and attachments that young,
  // instead of every 30 s and after 60 s. Not for production.
  std::chrono::seconds collect_every = kPodCollectInterval;
  absl::Duration grace = kPodInterfaceGrace;
  if (const char* every = std::getenv("TUNNELMESH_TEST_POD_COLLECT_SECONDS"); every != nullptr) {
    const int seconds = std::atoi(every);
    if (seconds > 0) {
      collect_every = std::chrono::seconds(seconds);
      grace = absl::Seconds(seconds);
      TM_LOG_WARN(
          "TUNNELMESH_TEST_POD_COLLECT_SECONDS={}: pod attachments are collected every {} s "
          "(tests only)",
          seconds, seconds);
    }
  }
  pods_ = std::make_unique<PodAttacher>(
      *std::move(store), session_.get(),
      [](const std::string& name) {
        // The agent runs in the host's network namespace.
        return if_nametoindex(name.c_str()) != 0;
      },
      grace);
  // Registered already (FollowCoordinator): collect what vanished while the agent was away, then
  // state the rest.
  pods_loop_.Post([this] {
    pods_->Collect(clock_.WallNow());
    pods_->Sync();
  });
  pods_loop_.RunEvery(collect_every, [this] { pods_->Collect(clock_.WallNow()); });
  pods_loop_.Start();
  return absl::OkStatus();
}

absl::Status Agent::Start() {
  if (session_) {
    if (absl::Status s = StartPods(); !s.ok()) return s;
  }
  if (absl::Status s = plane_->Start(); !s.ok()) return s;
  if (absl::Status s = StartMetrics(); !s.ok()) return s;
  loop_.RunEvery(kLivenessInterval, [this] { SampleLiveness(); });
  loop_.Start();
  absl::StatusOr<std::unique_ptr<ControlServer>> control = ControlServer::Listen(
      ControlSocketPath(params_.state_dir, params_.interface_name),
      [this](std::string_view request) { return HandleControlRequest(request); });
  if (!control.ok()) return control.status();
  control_ = std::move(*control);
  absl::StatusOr<std::unique_ptr<uapi::UapiServer>> wireguard_socket = uapi::UapiServer::Listen(
      uapi::kSocketDirectory, params_.interface_name,
      [this](uapi::Request request) { return HandleUapi(std::move(request)); });
  if (wireguard_socket.ok()) {
    uapi_ = std::move(*wireguard_socket);
    TM_LOG_DEBUG("WireGuard socket {} answers wg show and wg set", uapi_->path());
  } else {
    // Not fatal: the data plane does not need it, and the directory is shared by every network
    // namespace on the host, so agents in two namespaces may use one interface name.
    TM_LOG_ERROR("{}: `wg show {}` and `wg set` will not reach this agent",
                 std::string(wireguard_socket.status().message()), params_.interface_name);
  }
  if (params_.dns.has_value()) {
    DnsServerOptions dns = *params_.dns;
    for (const auto& [address, length] : params_.addresses) dns.addresses.push_back(address);
    absl::StatusOr<std::unique_ptr<DnsServer>> server = DnsServer::Start(std::move(dns));
    if (!server.ok()) return server.status();
    dns_ = std::move(*server);
    for (const Endpoint& e : dns_->endpoints())
      TM_LOG_INFO("mesh DNS on {} (UDP and TCP)", e.ToString());
    if (params_.register_resolved) {
      resolved_detection_ = DetectResolved();
      TM_LOG_DEBUG("systemd-resolved: {} ({})",
                   resolved_detection_.presence == ResolvedPresence::kRunning
                       ? "runs in this network namespace"
                       : "not registering",
                   resolved_detection_.detail);
      if (resolved_detection_.presence == ResolvedPresence::kRunning) {
        ResolvedRegistrar::Options options;
        options.resolved_pid = [] {
          const ResolvedDetection now = DetectResolved();
          return now.presence == ResolvedPresence::kRunning ? now.pid : pid_t{0};
        };
        resolved_ = std::make_unique<ResolvedRegistrar>(std::make_unique<SubprocessRunner>(),
                                                        std::move(options));
      }
    }
    loop_.Post([this] { PublishZone(); });
  }
  if (session_) session_->Start();
  return absl::OkStatus();
}

absl::Status Agent::StartMetrics() {
  if (!params_.metrics_address.has_value()) return absl::OkStatus();
  auto render = [this] { return MetricsText(kStatusTimeout); };
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> server = metrics::MetricsServer::Start(
      *params_.metrics_address, "--metrics-address", "--no-metrics", render);
  if (!server.ok() && absl::IsAlreadyExists(server.status()) && !params_.metrics_address_given) {
    // The default port of the first agent on this host: another one takes a free port.
    server = metrics::MetricsServer::Start(Endpoint(params_.metrics_address->address(), 0),
                                           "--metrics-address", "--no-metrics", render);
    if (server.ok()) {
      TM_LOG_WARN(
          "metrics: TCP port {} is in use (another agent on this host?); serving /metrics on {} "
          "instead (choose one with --metrics-address; `status` shows it)",
          params_.metrics_address->port(), (*server)->endpoint().ToString());
    }
  }
  if (!server.ok() && !params_.metrics_address_given) {
    // Metrics are not worth stopping the tunnel for when nobody asked for an address: without a
    // loopback interface, for one.
    TM_LOG_WARN("{}: running without metrics", std::string(server.status().message()));
    return absl::OkStatus();
  }
  if (!server.ok()) return server.status();
  metrics_ = *std::move(server);
  TM_LOG_INFO("metrics on http://{}/metrics", metrics_->endpoint().ToString());
  return absl::OkStatus();
}

std::optional<std::string> Agent::MetricsText(absl::Duration timeout) {
  return loop_.Call<std::string>([this] { return BuildMetricsText(); }, timeout);
}

std::string Agent::BuildMetricsText() {
  AgentMetricsExtras extras;
  extras.version = params_.version;
  if (dns_ != nullptr) {
    for (int i = 0; i < dns::kOutcomeCount; ++i) {
      const auto outcome = static_cast<dns::Outcome>(i);
      extras.dns_queries[dns::OutcomeName(outcome)] = dns_->queries(outcome);
    }
  }
  if (metrics_ != nullptr) {
    extras.metrics_scrapes = metrics_->scrapes();
    extras.metrics_bad_requests = metrics_->bad_requests();
    extras.metrics_unavailable = metrics_->unavailable();
  }
  return RenderAgentMetrics(BuildStatus(), extras, absl::Now());
}

void Agent::PublishZone() {
  if (dns_ == nullptr) return;
  MeshZoneInput input;
  input.domain = settings_.domain();
  // Absent (an older coordinator): the Mesh's default of 5 s.
  if (settings_.has_dns_ttl_seconds()) input.ttl = settings_.dns_ttl_seconds();
  if (settings_.has_dns_negative_ttl_seconds()) {
    input.negative_ttl = settings_.dns_negative_ttl_seconds();
  }
  input.version = map_version_;
  input.ranges = params_.mesh_cidrs;
  input.server_label = name_;
  MeshZoneInput::Member self{name_, aliases_, {}};
  for (const IpAddress& ip : mesh_ips_) self.addresses.push_back(ip.ToString());
  input.members.push_back(std::move(self));
  for (const auto& [key, info] : peers_->peers()) {
    input.members.push_back({info.name, info.aliases, info.mesh_ips});
  }
  for (const auto& [key, pod] : peers_->pod_peers()) {
    input.members.push_back({pod.name, pod.aliases, pod.mesh_ips});
  }
  for (const Endpoint& e : dns_->endpoints()) input.server_addresses.push_back(e.address());
  dns_->SetZone(BuildMeshZone(input));
  PublishResolved();
}

void Agent::PublishResolved() {
  if (!params_.register_resolved || (resolved_ == nullptr && resolved_advice_logged_)) return;
  // The link's servers are the server's addresses on the interface itself: resolved sends a
  // link's queries through that link (node-agent/dns/resolved.h). The other one is --dns-listen.
  std::vector<Endpoint> on_link;
  std::optional<Endpoint> loopback;
  for (const Endpoint& e : dns_->endpoints()) {
    bool mesh_ip = false;
    for (const auto& [ip, length] : params_.addresses) mesh_ip = mesh_ip || ip == e.address();
    if (mesh_ip) {
      on_link.push_back(e);
    } else if (!loopback) {
      loopback = e;
    }
  }
  ResolvedLink link = MakeResolvedLink(params_.interface_name, settings_.domain(),
                                       params_.mesh_cidrs, std::move(on_link));
  if (resolved_ != nullptr) {
    if (!link.servers.empty()) resolved_->Register(std::move(link));
    return;
  }
  resolved_advice_logged_ = true;
  if (!loopback) return;
  for (const std::string& line :
       HostResolverAdvice(resolved_detection_, link, *loopback, params_.dns->upstream)) {
    TM_LOG_INFO("{}", line);
  }
}

std::string Agent::HandleControlRequest(std::string_view request) {
  if (request == "ping") return "pong";
  if (request == "status") {
    std::optional<std::string> status = StatusJson(kStatusTimeout);
    if (status) return *status;
    return "{\"error\": \"the agent's control loop did not answer within 5 s\"}";
  }
  if (request.substr(0, 8) == "explain ") return HandleExplain(request);
  if (request.substr(0, cni::kRequestPrefix.size()) == cni::kRequestPrefix) {
    return HandleCni(request.substr(cni::kRequestPrefix.size()));
  }
  if (request == "leave" && session_) {
    // The RPC runs here, on the control socket's thread, not on the control loop.
    if (relay_) relay_->SetLeaving(true);
    absl::Status s = session_->Leave();
    if (!s.ok()) {
      if (relay_) relay_->SetLeaving(false);
      nlohmann::json error = {{"error", std::string(s.message())}};
      return error.dump();
    }
    leave_requested_ = true;
    return "{\"left\": true}";
  }
  return "{\"error\": \"unknown request\"}";
}

PodRequestContext Agent::BuildPodContext() const {
  PodRequestContext context;
  context.interface_name = params_.interface_name;
  context.mesh = settings_.mesh();
  context.connected = coordinator_connected_;
  context.disconnected_why = coordinator_error_;
  context.mtu = static_cast<uint32_t>(params_.mtu);
  for (const Prefix& cidr : params_.mesh_cidrs) context.routes.push_back(cidr.ToString());
  return context;
}

std::string Agent::HandleCni(std::string_view json) {
  absl::StatusOr<cni::AttachRequest> request = cni::DecodeRequest(json);
  if (!request.ok()) {
    return cni::EncodeResponse(
        cni::ErrorResponse(cni::kCniErrorDecode, std::string(request.status().message())));
  }
  if (pods_ == nullptr) {
    // Nothing was attached here, so there is nothing to delete.
    if (request->command == "DEL") return cni::EncodeResponse(cni::AttachResponse());
    return cni::EncodeResponse(
        cni::ErrorResponse(cni::kCniErrorNotAvailable,
                           "the agent of " + params_.interface_name +
                               " runs from a config file: only an agent that joined a mesh "
                               "(tunnelmesh-agent join) attaches pods"));
  }
  std::optional<PodRequestContext> context =
      loop_.Call<PodRequestContext>([this] { return BuildPodContext(); }, kStatusTimeout);
  if (!context) {
    return cni::EncodeResponse(cni::ErrorResponse(
        cni::kCniErrorTryLater, "the agent's control loop did not answer within 5 s"));
  }
  // The RPCs run on the pods thread, one request at a time, never on the control loop.
  std::optional<cni::AttachResponse> response = pods_loop_.Call<cni::AttachResponse>(
      [this, r = *std::move(request), c = *std::move(context)] {
        return pods_->Handle(r, c, clock_.WallNow());
      },
      kPodRequestTimeout);
  if (!response) {
    return cni::EncodeResponse(cni::ErrorResponse(
        cni::kCniErrorTryLater,
        "the agent did not finish the request within 20 s (the coordinator is slow, or many "
        "pods start at once); the runtime retries the pod"));
  }
  return cni::EncodeResponse(*response);
}

std::optional<std::string> Agent::StatusJson(absl::Duration timeout) {
  return loop_.Call<std::string>([this] { return BuildStatus().dump(); }, timeout);
}

nlohmann::json Agent::BuildStatus() {
  SelfInfo self;
  self.name = name_;
  self.interface_name = params_.interface_name;
  self.public_key = device_->identity().public_key;
  self.mesh_ips = mesh_ips_;
  self.listen_port = socket_ ? socket_->port() : 0;
  AgentHealth health;
  if (coordinated_) {
    health.mesh = settings_.mesh();
    health.coordinator = params_.coordinator_address;
    health.coordinator_connected = coordinator_connected_;
    health.coordinator_changed = coordinator_changed_;
    health.coordinator_error = coordinator_error_;
    health.has_relay = relay_ != nullptr;
    health.relay_connected = relay_ != nullptr && relay_->connected();
  }
  health.liveness = &liveness_;
  health.now = absl::Now();
  nlohmann::json status = BuildAgentStatus(
      self, *device_, plane_->drop_counts(), *peers_, paths_.get(), coordinated_, loop_.dropped(),
      health, policy::FilterStatusJson(filter_, rule_sets_.rules(), rule_sets_.history()));
  status["self"]["metrics"] = metrics_ != nullptr ? metrics_->endpoint().ToString() : "off";
  if (pods_ != nullptr) {
    nlohmann::json attached = nlohmann::json::array();
    for (const PodAttachment& a : *pods_->attachments()) {
      attached.push_back({{"name", a.name},
                          {"namespace", a.pod_namespace},
                          {"pod", a.pod_name},
                          {"container_id", a.container_id},
                          {"addresses", a.addresses},
                          {"host_interface", a.host_interface},
                          {"detaching", a.detaching}});
    }
    status["attached_pods"] = std::move(attached);
  }
  if (coordinated_) status["pod_peers"] = peers_->pod_peers().size();
  if (exit_) status["exit"] = exit_->Status(absl::Now());
  if (ssh_) {
    const SshCounters c = ssh_->counters();
    status["ssh"] = {{"port", ssh_->port()},
                     {"public_key", ssh_->public_key().ToBase64()},
                     {"connects", c.connects},
                     {"dial_failures", c.dial_failures},
                     {"host_key_mismatches", c.host_key_mismatches},
                     {"unknown_clients", c.unknown_clients},
                     {"send_dropped", c.send_dropped},
                     {"stream_errors", c.stream_errors},
                     {"refused_busy", c.refused_busy}};
  }
  return status;
}

bool Agent::PostMapUpdate(coord::MapUpdate update) {
  return loop_.Post([this, update = std::move(update)] { ApplyUpdate(update); });
}

void Agent::PostDisconnected(const absl::Status& why) {
  loop_.Post([this, why] {
    if (coordinator_connected_) coordinator_changed_ = absl::Now();
    coordinator_connected_ = false;
    coordinator_error_ = std::string(why.message());
  });
}

void Agent::SampleLiveness() {
  const absl::Time now = absl::Now();
  for (const auto& [key, info] : peers_->peers()) {
    const noise::Peer* peer = device_->FindPeer(key);
    if (peer == nullptr) continue;
    const noise::PeerStats& stats = peer->stats();
    PeerSample sample;
    sample.rx_packets = stats.rx_packets.load(std::memory_order_relaxed);
    sample.handshakes_completed = stats.handshakes_completed.load(std::memory_order_relaxed);
    sample.handshake_responses_rejected =
        stats.handshake_responses_rejected.load(std::memory_order_relaxed);
    sample.handshake_timeouts = stats.handshake_timeouts.load(std::memory_order_relaxed);
    sample.direct_path = paths_ != nullptr && paths_->HasPeer(key) &&
                         paths_->PathOf(key).kind == disco::PathKind::kDirect;
    liveness_.Sample(key, sample, now);
  }
  if (exit_) exit_->Tick(now);
}

void Agent::PostRegistered(coord::RegisterResponse response) {
  loop_.Post([this, response = std::move(response)] { ApplyRegistration(response); });
  // A coordinator that restarted or expired this member may have forgotten its pods. (The queue
  // holds 256 tasks; the plugin's requests wait for their answer, so it does not fill up.)
  if (pods_ != nullptr) pods_loop_.Post([this] { pods_->Sync(); });
}

void Agent::ApplyRegistration(const coord::RegisterResponse& response) {
  std::vector<IpAddress> ips;
  for (const std::string& ip : response.mesh_ips()) {
    absl::StatusOr<IpAddress> parsed = IpAddress::Parse(ip);
    if (parsed.ok()) ips.push_back(*parsed);
  }
  if (ips != mesh_ips_) {
    TM_LOG_WARN(
        "the coordinator changed this member's mesh IPs; keeping the interface's old "
        "addresses until restart");
  }
  name_ = response.name();
  aliases_.assign(response.aliases().begin(), response.aliases().end());
  settings_ = response.settings();
  peers_->SetPresharedKeys(settings_.preshared_key(), settings_.accepted_preshared_key());
  // A restarted coordinator has forgotten our endpoints.
  if (reporter_) reporter_->MarkDirty();
  UpdateExitServices();
  MaybeReport();
  PublishZone();
}

void Agent::ApplyUpdate(const coord::MapUpdate& update) {
  // Errors are logged and counted by the installer; the previous rule set stays.
  if (update.has_filter()) (void)rule_sets_.Apply(update.filter());
  if (update.has_settings()) {
    settings_ = update.settings();
    peers_->SetPresharedKeys(settings_.preshared_key(), settings_.accepted_preshared_key());
  }
  const PeerChanges changes = peers_->Apply(update);
  for (const PublicKey& key : changes.removed) liveness_.Forget(key);
  // Packets counted before this news are older than it: sample them now, or the next sample would
  // date them after an "offline" and keep the peer online for the whole evidence window.
  if (update.presence_size() > 0) SampleLiveness();
  for (const coord::Presence& presence : update.presence()) {
    liveness_.SetPresence(PublicKeyFromBytes(presence.public_key()), presence.online(),
                          presence.last_seen_unix() > 0
                              ? absl::FromUnixSeconds(presence.last_seen_unix())
                              : absl::InfinitePast(),
                          absl::Now());
  }
  if (update.full() && !coordinator_connected_) {
    coordinator_connected_ = true;
    coordinator_changed_ = absl::Now();
    coordinator_error_.clear();
  }
  if (exit_) {
    const absl::Time wall = absl::Now();
    for (const coord::Presence& presence : update.presence()) {
      exit_->SetPresence(PublicKeyFromBytes(presence.public_key()), presence.online(), wall);
    }
    if (update.has_exit()) exit_->ApplyConfig(update.exit(), wall);
    if (!changes.removed.empty() || !changes.upserted.empty()) exit_->OnPeersChanged(wall);
  }
  if (update.version() != 0) map_version_ = update.version();
  if (update.full() || !changes.removed.empty() || !changes.upserted.empty() ||
      update.has_settings()) {
    PublishZone();
  }
  if (!paths_) return;
  adapter_->PublishRelayPeers(*peers_);
  const MonoTime now = clock_.Now();
  for (const PublicKey& key : changes.removed) paths_->RemovePeer(key);
  for (const PublicKey& key : changes.upserted) {
    const PeerInfo* info = peers_->Find(key);
    if (info == nullptr) continue;
    if (info->is_static) {
      paths_->RemovePeer(key);
    } else {
      paths_->UpsertPeer(key, info->name, info->candidates, now);
    }
  }
  if (!changes.upserted.empty() || !changes.removed.empty()) PublishSshPeers(changes.upserted);
  if (update.has_call_me_maybe()) {
    std::vector<Endpoint> endpoints;
    for (const std::string& e : update.call_me_maybe().endpoints()) {
      absl::StatusOr<Endpoint> parsed = Endpoint::Parse(e);
      if (parsed.ok()) endpoints.push_back(*parsed);
    }
    paths_->OnCallMeMaybe(PublicKeyFromBytes(update.call_me_maybe().from_public_key()), endpoints,
                          now);
  }
}

std::optional<IpAddress> Agent::ResolveMember(const std::string& text,
                                              std::optional<IpAddress::Family> family) const {
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) return *ip;
  std::vector<IpAddress> candidates;
  if (text == name_) {
    candidates = mesh_ips_;
  } else {
    auto add = [&](const std::vector<std::string>& ips) {
      for (const std::string& ip : ips) {
        if (absl::StatusOr<IpAddress> parsed = IpAddress::Parse(ip); parsed.ok()) {
          candidates.push_back(*parsed);
        }
      }
    };
    for (const auto& [key, info] : peers_->peers()) {
      if (info.name == text) add(info.mesh_ips);
    }
    for (const auto& [key, pod] : peers_->pod_peers()) {
      if (pod.name == text) add(pod.mesh_ips);
    }
  }
  for (const IpAddress& ip : candidates) {
    if (!family || ip.family() == *family) return ip;
  }
  if (candidates.empty()) return std::nullopt;
  return candidates.front();
}

Agent::ExplainPlan Agent::PlanExplain(const policy::ExplainQuery& query) {
  ExplainPlan plan;
  std::optional<IpAddress> destination = ResolveMember(query.destination, std::nullopt);
  std::optional<IpAddress> source = ResolveMember(
      query.source, destination ? std::optional(destination->family()) : std::nullopt);
  bool local = false;
  if (destination) {
    for (const IpAddress& ip : mesh_ips_) local = local || ip == *destination;
    // This member's filter enforces for the pods it hosts.
    if (pods_ != nullptr) {
      for (const PodAttachment& pod : *pods_->attachments()) {
        for (const std::string& ip : pod.addresses) {
          local = local || ip == destination->ToString();
        }
      }
    }
    if (const filter::RuleSet* rules = rule_sets_.rules()) {
      for (const Prefix& prefix : rules->egress) {
        local = local || prefix.Contains(*destination);
      }
    }
  }
  if (local && source) {
    if (!filter_.enabled()) {
      plan.error = coordinated_ ? "this agent has no rule set from the coordinator yet"
                                : "this agent runs from a config file: it has no packet filter";
      return plan;
    }
    filter::FlowKey flow;
    flow.source = *source;
    flow.destination = *destination;
    flow.protocol = query.protocol;
    flow.destination_port = query.port;
    const filter::Explanation why = filter_.Explain(flow);
    policy::ExplainAnswer answer;
    answer.action = why.verdict.action;
    answer.policy = why.policy;
    answer.enforced_by = name_;
    answer.local = true;
    answer.source_ip = source->ToString();
    answer.destination_ip = destination->ToString();
    plan.answer = std::move(answer);
    return plan;
  }
  if (!session_) {
    plan.error = !destination || !source
                     ? "\"" + (source ? query.destination : query.source) +
                           "\" is neither a mesh IP nor a member this agent knows"
                     : "this agent runs from a config file: it enforces no policy and has no "
                       "coordinator to ask";
    return plan;
  }
  // Another member enforces it (or a name only the coordinator knows): ask the coordinator.
  plan.remote.set_source(source ? source->ToString() : query.source);
  plan.remote.set_destination(destination ? destination->ToString() : query.destination);
  plan.remote.set_protocol(policy::ProtocolToProto(query.protocol));
  plan.remote.set_port(query.port);
  return plan;
}

std::string Agent::HandleExplain(std::string_view request) {
  auto error = [](const std::string& message) {
    return nlohmann::json({{"error", message}}).dump();
  };
  absl::StatusOr<policy::ExplainQuery> query = policy::ParseExplainRequestLine(request);
  if (!query.ok()) return error(std::string(query.status().message()));
  std::optional<ExplainPlan> plan =
      loop_.Call<ExplainPlan>([this, q = *query] { return PlanExplain(q); }, kStatusTimeout);
  if (!plan) return error("the agent's control loop did not answer within 5 s");
  if (!plan->error.empty()) return error(plan->error);
  if (plan->answer) return policy::ExplainAnswerJson(*plan->answer).dump();
  // The RPC runs here, on the control socket's thread, not on the control loop.
  absl::StatusOr<coord::ExplainResponse> response = session_->Explain(plan->remote);
  if (!response.ok()) {
    return error("the coordinator could not explain it: " +
                 std::string(response.status().message()));
  }
  policy::ExplainAnswer answer;
  answer.action = response->action() == coord::FILTER_ACTION_ALLOW ? filter::Action::kAllow
                                                                   : filter::Action::kDeny;
  answer.policy = response->policy();
  answer.enforced_by = response->enforced_by();
  answer.source_ip = response->source_ip();
  answer.destination_ip = response->destination_ip();
  return policy::ExplainAnswerJson(answer).dump();
}

void Agent::OnForeignDatagram(const std::vector<uint8_t>& datagram, const Endpoint& from,
                              bool disco) {
  if (disco) {
    paths_->OnDiscoDatagram(datagram, from, clock_.Now());
  } else {
    reporter_->OnStunDatagram(datagram);
    MaybeReport();
  }
}

void Agent::PublishSshPeers(const std::vector<PublicKey>& upserted) {
  if (!ssh_) return;
  std::map<PublicKey, SshPeer> ssh_peers;
  for (const auto& [key, info] : peers_->peers()) {
    if (info.is_static || info.ssh_port == 0 || info.ssh_key.IsZero()) continue;
    SshPeer& peer = ssh_peers[key];
    peer.name = info.name;
    peer.host_key = info.ssh_key;
    peer.port = info.ssh_port;
    // The hosts of its endpoints, in the map's order, each once.
    for (const Endpoint& e : info.candidates) {
      if (std::find(peer.hosts.begin(), peer.hosts.end(), e.address()) == peer.hosts.end()) {
        peer.hosts.push_back(e.address());
      }
    }
  }
  const MonoTime now = clock_.Now();
  for (const PublicKey& key : upserted) {
    if (paths_->HasPeer(key)) paths_->SetSshOffered(key, ssh_peers.count(key) != 0, now);
  }
  ssh_->SetPeers(std::move(ssh_peers));
}

void Agent::OnSshFrame(const PublicKey& peer, const Endpoint& remote,
                       absl::Span<const uint8_t> frame) {
  if (!disco::IsDiscoMessage(frame)) {
    relay_bind_->Deliver(peer, frame, Transport::kSsh);
    return;
  }
  if (frame.size() > kMaxForeignDatagram) return;
  std::vector<uint8_t> copy(frame.begin(), frame.end());
  // A full queue drops it (counted by the loop); the next heartbeat resends.
  loop_.Post([this, peer, remote, copy = std::move(copy)] {
    if (paths_) paths_->OnSshDiscoDatagram(peer, remote, copy, clock_.Now());
  });
}

void Agent::PathTick() {
  paths_->SetRelayAvailable(relay_ != nullptr && relay_->connected());
  paths_->Tick(clock_.Now());
  for (const PublicKey& peer : paths_->TakeCallMeMaybe()) {
    session_->CallMeMaybe(peer, reporter_->reported());
  }
  // The coordinator shows how this member reaches its peers (MeshPeer status.pathSummary,
  // status.peerPaths and PathChanged Events).
  std::vector<ReportedPath> paths;
  for (const auto& [peer, kind] : paths_->Paths()) paths.push_back({peer, kind});
  reporter_->SetPaths(std::move(paths));
  MaybeReport();
}

void Agent::SendStun() {
  const std::string address = ResolveServiceHost(settings_.stun_address());
  if (address.empty()) return;
  absl::StatusOr<Endpoint> server = Endpoint::Parse(address);
  if (!server.ok()) {
    TM_LOG_DEBUG("STUN server \"{}\": {}", address, std::string(server.status().message()));
    return;
  }
  reporter_->SendStunRequest(*server);
}

void Agent::MaybeReport() {
  if (!reporter_ || !reporter_->dirty() || report_in_flight_) return;
  EndpointReport report =
      reporter_->TakeReport(LocalAddresses(params_.interface_name), socket_->port());
  report_in_flight_ = true;
  session_->ReportEndpoints(report, [this, report](bool ok) {
    report_in_flight_ = false;
    loop_.Post([this, report, ok] { reporter_->ReportDone(report, ok); });
  });
}

int Agent::Run(const sigset_t& signals, bool member) {
  while (!leave_requested_ && !refused_) {
    timespec timeout{0, 200'000'000};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      if (member) {
        TM_LOG_INFO(
            "signal {} received: shutting down (still a member; `tunnelmesh-agent leave` "
            "removes it)",
            sig);
      } else {
        TM_LOG_INFO("signal {} received: shutting down", sig);
      }
      break;
    }
    if (!plane_->running()) {
      TM_LOG_ERROR("data plane failed: {}", plane_->failure().ToString());
      break;
    }
  }
  if (leave_requested_) TM_LOG_INFO("left the mesh: shutting down");
  if (ssh_) ssh_->Stop();
  if (session_) session_->Stop();
  metrics_.reset();
  control_.reset();
  pods_loop_.Stop();
  uapi_.reset();
  loop_.Stop();
  if (exit_) exit_->Stop();
  // Before the interface goes: `resolvectl revert`.
  if (resolved_) resolved_->Stop();
  plane_->Stop();
  relay_.reset();
  if (absl::Status s = link_->Teardown(); !s.ok()) {
    TM_LOG_WARN("removing routes and addresses of {}: {}", params_.interface_name, s.ToString());
  }
  return plane_->failure().ok() && !refused_ ? 0 : kExitFailure;
}

}  // namespace tunnelmesh
