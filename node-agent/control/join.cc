#include "node-agent/control/join.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "lib/base/log.h"
#include "lib/crypto/aead.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/x509.h"
#include "lib/disco/message.h"
#include "lib/disco/path_selector.h"
#include "lib/noise/device.h"
#include "lib/wire/stun.h"
#include "node-agent/control/control_socket.h"
#include "node-agent/control/coordinator_client.h"
#include "node-agent/control/status.h"
#include "node-agent/dataplane/dataplane.h"
#include "node-agent/netlink/link_configurator.h"
#include "node-agent/transport/relay_bind.h"
#include "node-agent/transport/relay_client.h"
#include "node-agent/transport/udp_bind.h"
#include "node-agent/tun/linux_tun_device.h"

namespace tunnelmesh {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr uint16_t kDefaultCoordinatorPort = 7700;
constexpr auto kStunInterval = std::chrono::seconds(15);
// Reconnect backoff: starts near 100 ms and doubles up to 600 ms; with jitter (0.5x to 1.5x) every
// wait stays under 900 ms, so members are back within a second of the coordinator's return.
constexpr auto kBackoffStart = std::chrono::milliseconds(100);
constexpr auto kBackoffMax = std::chrono::milliseconds(600);

std::string ReadTrimmed(const std::string& path, bool* ok) {
  std::ifstream in(path);
  *ok = static_cast<bool>(in);
  std::stringstream s;
  s << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(s.str()));
}

coord::MemberKind KindOf(const std::string& kind) {
  if (kind == "Node") return coord::MEMBER_KIND_NODE;
  if (kind == "Pod") return coord::MEMBER_KIND_POD;
  if (kind == "External") return coord::MEMBER_KIND_EXTERNAL;
  return coord::MEMBER_KIND_UNSPECIFIED;
}

bool SplitHostPort(const std::string& text, std::string* host, uint16_t* port) {
  std::string rest = text;
  *port = kDefaultCoordinatorPort;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string::npos) return false;
    *host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (rest.empty()) return true;
    if (rest.front() != ':') return false;
    rest = rest.substr(1);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string::npos || rest.find(':') != colon) {
      *host = rest;
      return !host->empty();
    }
    *host = rest.substr(0, colon);
    rest = rest.substr(colon + 1);
  }
  if (host->empty() || rest.empty() || rest.size() > 5) return false;
  for (char c : rest) {
    if (c < '0' || c > '9') return false;
  }
  int p = std::stoi(rest);
  if (p < 1 || p > 65535) return false;
  *port = static_cast<uint16_t>(p);
  return true;
}

std::string KeyBytes(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
}

PublicKey KeyFrom(const std::string& bytes) {
  PublicKey key;
  if (bytes.size() == kKeySize) std::memcpy(key.bytes.data(), bytes.data(), kKeySize);
  return key;
}

absl::StatusOr<SecretKey> LoadOrCreateNodeKey(const std::string& dir) {
  const std::string path = dir + "/node.key";
  bool ok = false;
  std::string text = ReadTrimmed(path, &ok);
  if (ok && !text.empty()) {
    absl::StatusOr<SecretKey> key = SecretKey::FromBase64(text);
    if (!key.ok()) return absl::DataLossError(path + " does not hold a private key");
    return key;
  }
  SecretKey key = SecretKey::GeneratePrivate();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << key.ToBase64() << "\n";
    if (!out) return absl::FailedPreconditionError("cannot write " + path + ": set --state-dir");
  }
  std::filesystem::permissions(tmp, std::filesystem::perms::owner_read |
                                        std::filesystem::perms::owner_write, ec);
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::FailedPreconditionError("cannot write " + path + ": " + ec.message());
  return key;
}

// Non-loopback, non-tunnel interface addresses: the member's local endpoint candidates.
std::vector<IpAddress> LocalAddresses(const std::string& own_interface) {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || !(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK)) continue;
    if (own_interface == a->ifa_name) continue;
    const socklen_t len = a->ifa_addr->sa_family == AF_INET ? sizeof(sockaddr_in)
                                                             : sizeof(sockaddr_in6);
    absl::StatusOr<Endpoint> e = Endpoint::FromSockaddr(a->ifa_addr, len);
    if (!e.ok()) continue;
    const uint8_t* b = e->address().bytes();
    if (e->address().is_v6() && b[0] == 0xfe && (b[1] & 0xc0) == 0x80) continue;  // Link-local.
    out.push_back(e->address());
  }
  freeifaddrs(list);
  return out;
}

class JoinAgent {
 public:
  explicit JoinAgent(const JoinOptions& options) : options_(options) {}
  int Run(const sigset_t& signals);

 private:
  struct PeerInfo {
    std::string name;
    std::string dns_name;
    std::vector<std::string> mesh_ips;
    std::vector<Prefix> allowed;
    std::vector<Endpoint> candidates;
    uint32_t device_id = 0;
    // Direct-path discovery: which path carries traffic, and the precomputed box key for sealing
    // discovery messages to this peer.
    std::unique_ptr<disco::PathSelector> selector;
    std::unique_ptr<disco::BoxKey> box;
    disco::Path applied;
    bool is_static = false;  // A plain WireGuard peer: fixed endpoint, no discovery, no PSK.
  };

  int Setup();
  absl::Status Register();
  void WatchLoop();
  void StunLoop();
  void Apply(const coord::MapUpdate& update);
  void UpsertPeer(const coord::Peer& peer);
  void RemovePeer(const PublicKey& key);
  void PublishRoutes();
  bool OnForeign(absl::Span<const uint8_t> datagram, const Endpoint& from);
  void ReportEndpoints();
  void PathLoop();
  // Points the device at the path the selector chose. Requires mu_.
  void ApplyPath(const PublicKey& key, PeerInfo& info);
  void SendDisco(const PeerInfo& info, const disco::Message& message, const Endpoint& to);
  void ConnectRelay();
  std::string ResolveServiceHost(const std::string& address) const;
  void Backoff(std::chrono::milliseconds* delay);
  std::string Status();

  const JoinOptions options_;
  std::string host_;
  uint16_t port_ = kDefaultCoordinatorPort;
  std::string token_;
  SystemClock clock_;
  std::unique_ptr<noise::Device> device_;
  std::unique_ptr<LinuxTunDevice> tun_;
  std::unique_ptr<UdpBind> socket_;
  std::unique_ptr<LinkConfigurator> link_;
  std::unique_ptr<Dataplane> plane_;
  // Replaced by a fresh channel after the coordinator goes away: a channel that saw the old
  // process can keep failing its TLS handshakes with the new one.
  std::shared_ptr<CoordinatorClient> client() {
    std::lock_guard<std::mutex> lock(mu_);
    return client_;
  }
  std::shared_ptr<CoordinatorClient> client_;
  std::string target_;
  std::string ca_pem_;
  std::unique_ptr<ControlServer> control_;
  // The data plane's relay transport; it maps the device's peer ids to keys and hands frames to
  // relay_ (set before the data plane starts, reset after it stopped).
  std::unique_ptr<RelayBind> relay_bind_;
  std::unique_ptr<RelayClient> relay_;
  SecretKey private_key_;
  PublicKey public_key_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> leave_requested_{false};
  // The coordinator refused this member for good (MeshPeer deleted, token revoked).
  std::atomic<bool> refused_{false};
  std::atomic<bool> leaving_{false};
  int wake_fd_ = -1;
  // The main thread's blocked signals while Setup retries; null afterwards.
  const sigset_t* signals_ = nullptr;

  std::mutex mu_;  // Guards everything below.
  std::condition_variable cv_;
  std::string name_;
  std::vector<IpAddress> mesh_ips_;
  std::vector<Prefix> mesh_cidrs_;
  coord::Settings settings_;
  std::map<PublicKey, PeerInfo> peers_;
  std::optional<Endpoint> reflexive_;
  stun::TransactionId stun_txid_{};
  bool stun_pending_ = false;
  bool endpoints_dirty_ = true;
  // Peers reached directly / through the relay, as last reported with the endpoints.
  std::pair<uint32_t, uint32_t> path_counts_{0, 0};
  std::vector<std::string> reported_;
  std::vector<PublicKey> call_me_maybe_queue_;
  bool relay_connected_ = false;
};

void JoinAgent::Backoff(std::chrono::milliseconds* delay) {
  static thread_local std::mt19937 rng(std::random_device{}());
  const auto jittered = std::chrono::milliseconds(
      delay->count() / 2 + static_cast<long>(rng() % static_cast<unsigned>(delay->count() + 1)));
  if (signals_ != nullptr) {
    // Setup runs on the main thread, which owns the blocked signals: take them while waiting.
    timespec timeout{jittered.count() / 1000, (jittered.count() % 1000) * 1'000'000};
    int sig = sigtimedwait(signals_, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      TM_LOG_INFO("signal {} received before joining: stopping", sig);
      stopping_ = true;
    }
    *delay = std::min(*delay * 2, kBackoffMax);
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, jittered, [&] { return stopping_.load(); });
  *delay = std::min(*delay * 2, kBackoffMax);
}

std::string JoinAgent::ResolveServiceHost(const std::string& address) const {
  // The coordinator leaves the host out when members should use the one they dialed.
  const std::string host = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  if (!address.empty() && address.front() == ':') return host + address;
  if (address.rfind("ws://:", 0) == 0) return "ws://" + host + address.substr(5);
  return address;
}

void JoinAgent::ConnectRelay() {
  std::string url;
  PublicKey server_key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    url = ResolveServiceHost(settings_.relay_url());
    if (settings_.relay_public_key().size() == kKeySize) {
      std::memcpy(server_key.bytes.data(), settings_.relay_public_key().data(), kKeySize);
    }
  }
  if (url.empty() || server_key.IsZero()) {
    TM_LOG_WARN("the coordinator offers no relay: peers behind strict NATs will be unreachable");
    return;
  }
  relay_ = std::make_unique<RelayClient>();
  relay_->SetReceiveCallback([this](const PublicKey& source, absl::Span<const uint8_t> payload) {
    relay_bind_->Deliver(source, payload);
  });
  if (absl::Status s = relay_->Connect(url, private_key_, public_key_, server_key); !s.ok()) {
    TM_LOG_WARN("relay {}: {}", url, std::string(s.message()));
  } else {
    TM_LOG_INFO("relay {} in use for peers without a direct path", url);
  }
}

absl::Status JoinAgent::Register() {
  coord::RegisterRequest request;
  if (!options_.kubernetes_token_file.empty()) {
    bool ok = false;
    std::string token = ReadTrimmed(options_.kubernetes_token_file, &ok);
    if (!ok || token.empty()) {
      return absl::UnavailableError("cannot read --kubernetes-token-file " +
                                    options_.kubernetes_token_file);
    }
    request.set_kubernetes_token(token);
  } else {
    request.set_join_token(token_);
  }
  request.set_public_key(KeyBytes(public_key_));
  request.set_name(options_.name);
  request.set_mesh(options_.mesh);
  for (const auto& [k, v] : options_.labels) (*request.mutable_labels())[k] = v;
  request.set_kind(KindOf(options_.kind));
  request.set_listen_port(socket_->port());
  std::shared_ptr<CoordinatorClient> coordinator = client();
  absl::StatusOr<coord::RegisterResponse> response =
      coordinator->Register(request, absl::Seconds(5));
  if (!response.ok()) return response.status();
  coordinator->SetSessionToken(response->session_token());
  std::vector<IpAddress> ips;
  for (const std::string& ip : response->mesh_ips()) {
    absl::StatusOr<IpAddress> parsed = IpAddress::Parse(ip);
    if (parsed.ok()) ips.push_back(*parsed);
  }
  std::vector<Prefix> cidrs;
  for (const std::string& c : response->mesh_cidrs()) {
    absl::StatusOr<Prefix> parsed = Prefix::Parse(c);
    if (parsed.ok()) cidrs.push_back(*parsed);
  }
  if (ips.empty()) return absl::InternalError("the coordinator assigned no mesh IP");
  std::lock_guard<std::mutex> lock(mu_);
  const bool first = mesh_ips_.empty();
  if (!first && ips != mesh_ips_) {
    TM_LOG_WARN("the coordinator changed this member's mesh IPs; keeping the interface's old "
                "addresses until restart");
  }
  name_ = response->name();
  if (first) {
    mesh_ips_ = ips;
    mesh_cidrs_ = cidrs;
  }
  settings_ = response->settings();
  endpoints_dirty_ = true;  // A restarted coordinator has forgotten our endpoints.
  cv_.notify_all();
  TM_LOG_INFO("registered as {} with {}{}", name_, ips[0].ToString(),
              ips.size() > 1 ? " and " + ips[1].ToString() : std::string());
  return absl::OkStatus();
}

int JoinAgent::Setup() {
  if (!SplitHostPort(options_.coordinator, &host_, &port_)) {
    std::fprintf(stderr, "tunnelmesh-agent: join: \"%s\" is not HOST[:PORT]\n",
                 options_.coordinator.c_str());
    return kExitUsage;
  }
  if (options_.token_file.empty() == options_.kubernetes_token_file.empty()) {
    std::fprintf(stderr, "tunnelmesh-agent: join: give exactly one of --token-file (the mesh's "
                         "join token) and --kubernetes-token-file (a ServiceAccount token)\n");
    return kExitUsage;
  }
  if (KindOf(options_.kind) == coord::MEMBER_KIND_UNSPECIFIED) {
    std::fprintf(stderr, "tunnelmesh-agent: join: --kind \"%s\" is not one of Node, Pod, "
                         "External\n", options_.kind.c_str());
    return kExitUsage;
  }
  bool ok = false;
  const std::string& token_path =
      options_.token_file.empty() ? options_.kubernetes_token_file : options_.token_file;
  token_ = ReadTrimmed(token_path, &ok);
  if (!ok || token_.empty()) {
    std::fprintf(stderr, "tunnelmesh-agent: join: cannot read a token from %s %s\n",
                 options_.token_file.empty() ? "--kubernetes-token-file" : "--token-file",
                 token_path.c_str());
    return kExitUsage;
  }
  std::string ca_pem;
  if (!options_.ca_file.empty()) {
    ca_pem = ReadTrimmed(options_.ca_file, &ok);
    if (!ok || ca_pem.find("BEGIN CERTIFICATE") == std::string::npos) {
      std::fprintf(stderr, "tunnelmesh-agent: join: --ca-file %s does not hold a PEM "
                           "certificate\n", options_.ca_file.c_str());
      return kExitUsage;
    }
    ca_pem += "\n";
  }
  if (!options_.ca_hash.empty()) {
    if (absl::Status s = ValidateCaHash(options_.ca_hash); !s.ok()) {
      std::fprintf(stderr, "tunnelmesh-agent: join: %s\n", std::string(s.message()).c_str());
      return kExitUsage;
    }
  }
  absl::StatusOr<SecretKey> key = LoadOrCreateNodeKey(options_.state_dir);
  if (!key.ok()) {
    TM_LOG_ERROR("{}", std::string(key.status().message()));
    return kExitFailure;
  }
  private_key_ = std::move(*key);
  public_key_ = DerivePublicKey(private_key_);

  TM_LOG_INFO("connecting to coordinator {}:{}", host_, port_);
  std::chrono::milliseconds delay = kBackoffStart;
  while (!stopping_ && ca_pem.empty()) {
    std::string warning;
    absl::StatusOr<std::string> ca = FetchCoordinatorCa(
        host_, port_, options_.ca_hash, options_.state_dir + "/coordinator-ca.pem", &warning);
    if (ca.ok()) {
      if (!warning.empty()) TM_LOG_WARN("{}", warning);
      ca_pem = *ca;
      break;
    }
    if (ca.status().code() == absl::StatusCode::kPermissionDenied) {
      TM_LOG_ERROR("{}", std::string(ca.status().message()));
      return kExitFailure;
    }
    TM_LOG_WARN("{}; retrying", std::string(ca.status().message()));
    Backoff(&delay);
  }
  if (stopping_) return 0;
  const std::string target =
      (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" +
      std::to_string(port_);
  target_ = target;
  ca_pem_ = ca_pem;
  client_ = std::make_shared<CoordinatorClient>(target, ca_pem);

  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun =
      LinuxTunDevice::Create(options_.interface_name, /*offload=*/true);
  if (!tun.ok()) {
    TM_LOG_ERROR("creating interface {}: {}", options_.interface_name,
                 std::string(tun.status().message()));
    return kExitFailure;
  }
  tun_ = std::move(*tun);
  absl::StatusOr<std::unique_ptr<UdpBind>> socket =
      UdpBind::Open(options_.listen_port, /*fall_back_to_any=*/true);
  if (!socket.ok()) {
    TM_LOG_ERROR("{}", std::string(socket.status().message()));
    return kExitFailure;
  }
  socket_ = std::move(*socket);
  // Frames for relayed peers go to the relay client once ConnectRelay made one (before the data
  // plane starts); without a relay they are refused and counted as send_failed.
  relay_bind_ = std::make_unique<RelayBind>(
      [this](const PublicKey& destination, absl::Span<const uint8_t> frame) {
        return relay_ != nullptr && relay_->Send(destination, frame);
      });
  if (options_.listen_port != 0 && socket_->port() != options_.listen_port) {
    TM_LOG_INFO("UDP port {} is in use; using {} (the coordinator tells peers)",
                options_.listen_port, socket_->port());
  }

  delay = kBackoffStart;
  while (!stopping_) {
    absl::Status s = Register();
    if (s.ok()) break;
    const auto code = s.code();
    if (code == absl::StatusCode::kPermissionDenied || code == absl::StatusCode::kInvalidArgument ||
        code == absl::StatusCode::kNotFound || code == absl::StatusCode::kResourceExhausted) {
      TM_LOG_ERROR("the coordinator refused to register this member: {}",
                   std::string(s.message()));
      return kExitFailure;
    }
    TM_LOG_WARN("registering: {}; retrying", std::string(s.message()));
    Backoff(&delay);
  }
  if (stopping_) return 0;

  const size_t mtu = settings_.mtu() >= 1280 ? settings_.mtu() : 1420;
  device_ = std::make_unique<noise::Device>(private_key_, mtu);
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link =
      LinkConfigurator::Create(options_.interface_name);
  if (!link.ok()) {
    TM_LOG_ERROR("{}", std::string(link.status().message()));
    return kExitFailure;
  }
  link_ = std::move(*link);
  absl::Status configured = link_->SetMtu(static_cast<int>(mtu));
  for (const IpAddress& ip : mesh_ips_) {
    int length = ip.bit_length();
    for (const Prefix& cidr : mesh_cidrs_) {
      if (cidr.Contains(ip)) length = cidr.length();
    }
    if (configured.ok()) configured = link_->AddAddress(ip, length);
  }
  if (configured.ok()) configured = link_->SetUp();
  if (!configured.ok()) {
    TM_LOG_ERROR("{}", std::string(configured.message()));
    return kExitFailure;
  }
  plane_ = std::make_unique<Dataplane>(device_.get(), tun_.get(), socket_.get(), relay_bind_.get(),
                                       mtu, &clock_);
  plane_->SetForeignHandler(
      [this](absl::Span<const uint8_t> datagram, const TransportEndpoint& from) {
        // Discovery and STUN run on direct UDP only; anything else relayed goes to the device.
        return from.is_udp() && OnForeign(datagram, from.udp());
      });
  ConnectRelay();
  if (absl::Status s = plane_->Start(); !s.ok()) {
    TM_LOG_ERROR("{}", std::string(s.message()));
    return kExitFailure;
  }
  absl::StatusOr<std::unique_ptr<ControlServer>> control = ControlServer::Listen(
      ControlSocketPath(options_.state_dir, options_.interface_name),
      [this](std::string_view request) -> std::string {
        if (request == "ping") return "pong";
        if (request == "status") return Status();
        if (request == "leave") {
          // Stop following the map first: the coordinator ends our watch when we leave, and the
          // watch loop must not take that for a disconnect and register again.
          leaving_ = true;
          client()->CancelWatch();
          absl::Status s = client()->Leave();
          if (!s.ok()) {
            leaving_ = false;
            return "{\"error\": \"" + std::string(s.message()) + "\"}";
          }
          leave_requested_ = true;
          uint64_t one = 1;
          (void)!write(wake_fd_, &one, sizeof(one));
          return "{\"left\": true}";
        }
        return "{\"error\": \"unknown request\"}";
      });
  if (!control.ok()) {
    TM_LOG_ERROR("{}", std::string(control.status().message()));
    return kExitFailure;
  }
  control_ = std::move(*control);
  return -1;  // Running.
}

std::string JoinAgent::Status() {
  SelfInfo self;
  {
    std::lock_guard<std::mutex> lock(mu_);
    self.name = name_;
    self.mesh_ips = mesh_ips_;
  }
  self.interface_name = options_.interface_name;
  self.public_key = public_key_;
  self.listen_port = socket_->port();
  return BuildStatus(self, *device_, *plane_->routes(), plane_->drop_counts(),
                     [this](const noise::Peer& peer, nlohmann::json& fields) {
                       std::lock_guard<std::mutex> lock(mu_);
                       auto it = peers_.find(peer.public_key());
                       if (it == peers_.end()) return;
                       fields["name"] = it->second.name;
                       fields["mesh_ips"] = it->second.mesh_ips;
                       fields["dns_name"] = it->second.dns_name;
                       if (it->second.selector) {
                         const disco::Path path = it->second.selector->CurrentPath();
                         fields["path"] = disco::PathKindName(path.kind);
                         if (path.kind == disco::PathKind::kRelay) fields["endpoint"] = "relay";
                       }
                     })
      .dump();
}

void JoinAgent::PublishRoutes() {
  auto routes = std::make_shared<RouteTable>();
  std::vector<Prefix> outside_mesh;
  for (const auto& [key, info] : peers_) {
    noise::Peer* peer = device_->FindPeer(key);
    if (peer == nullptr) continue;
    for (const Prefix& prefix : info.allowed) {
      routes->Insert(prefix, peer);
      bool inside = false;
      for (const Prefix& cidr : mesh_cidrs_) {
        inside = inside || (cidr.Contains(prefix.address()) && prefix.length() >= cidr.length());
      }
      if (!inside) outside_mesh.push_back(prefix);
    }
  }
  plane_->SetRoutes(routes);
  // Mesh IPs are covered by the interface's connected routes; anything else needs its own route.
  if (absl::Status s = link_->ReplaceRoutes(outside_mesh); !s.ok()) {
    TM_LOG_WARN("updating routes: {}", std::string(s.message()));
  }
}

void JoinAgent::UpsertPeer(const coord::Peer& peer) {
  const PublicKey key = KeyFrom(peer.public_key());
  if (key.IsZero() || key == public_key_) return;
  PeerInfo info;
  info.name = peer.name();
  info.dns_name = peer.dns_name();
  info.mesh_ips.assign(peer.mesh_ips().begin(), peer.mesh_ips().end());
  for (const std::string& p : peer.allowed_ips()) {
    absl::StatusOr<Prefix> prefix = Prefix::Parse(p);
    if (prefix.ok()) info.allowed.push_back(*prefix);
  }
  for (const std::string& e : peer.endpoints()) {
    absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(e);
    if (endpoint.ok()) info.candidates.push_back(*endpoint);
  }
  info.is_static = peer.static_peer();
  noise::Peer* existing = device_->FindPeer(key);
  if (auto old = peers_.find(key); existing != nullptr && old != peers_.end() &&
                                   old->second.is_static != info.is_static) {
    // A static member got an agent (or lost it): its preshared key and path handling change, so
    // the device peer starts over.
    RemovePeer(key);
    device_->RemovePeer(key, clock_.Now());
    existing = nullptr;
  }
  if (existing == nullptr && info.is_static) {
    std::optional<Endpoint> first;
    if (!info.candidates.empty()) first = info.candidates.front();
    absl::StatusOr<noise::Peer*> added = device_->AddPeer(
        {key, SecretKey(), first, std::chrono::seconds(0), /*roaming=*/true});
    if (!added.ok()) {
      TM_LOG_WARN("peer {}: {}", info.name, std::string(added.status().message()));
      return;
    }
    info.device_id = (*added)->id();
    TM_LOG_INFO("static peer {} ({}) joined the map at {}", info.name, key.Short(),
                first ? first->ToString() : std::string("no endpoint"));
  } else if (existing == nullptr) {
    SecretKey psk;
    if (settings_.preshared_key().size() == kKeySize) {
      psk = SecretKey(reinterpret_cast<const uint8_t*>(settings_.preshared_key().data()));
    }
    std::optional<Endpoint> first;
    if (!info.candidates.empty()) first = info.candidates.front();
    // The path selector, not the source of the latest packet, decides where the peer is reached.
    absl::StatusOr<noise::Peer*> added = device_->AddPeer(
        {key, std::move(psk), first, std::chrono::seconds(0), /*roaming=*/false});
    if (!added.ok()) {
      TM_LOG_WARN("peer {}: {}", info.name, std::string(added.status().message()));
      return;
    }
    info.device_id = (*added)->id();
    relay_bind_->SetPeer(info.device_id, key);
    info.selector = std::make_unique<disco::PathSelector>();
    info.box = std::make_unique<disco::BoxKey>();
    if (!disco::BoxKey::Derive(private_key_, key, info.box.get())) {
      TM_LOG_WARN("peer {}: its key is unusable for discovery", info.name);
    }
    TM_LOG_INFO("peer {} ({}) joined the map", info.name, key.Short());
  } else {
    auto old = peers_.find(key);
    if (old != peers_.end()) {
      info.device_id = old->second.device_id;
      info.selector = std::move(old->second.selector);
      info.box = std::move(old->second.box);
      info.applied = old->second.applied;
    }
  }
  if (info.selector) {
    info.selector->SetRelayAvailable(relay_connected_);
    info.selector->SetCandidates(info.candidates, clock_.Now());
    // Until a path is confirmed, try the first candidate directly (it works on open networks).
    noise::Peer* peer = device_->FindPeer(key);
    if (peer != nullptr && info.selector->CurrentPath().kind == disco::PathKind::kNone &&
        !info.candidates.empty() && !peer->endpoint()) {
      peer->set_endpoint(info.candidates.front());
    }
  }
  peers_[key] = std::move(info);
}

void JoinAgent::RemovePeer(const PublicKey& key) {
  auto it = peers_.find(key);
  if (it == peers_.end()) return;
  TM_LOG_INFO("peer {} left the map", it->second.name);
  relay_bind_->RemovePeer(it->second.device_id);
  peers_.erase(it);
}

void JoinAgent::Apply(const coord::MapUpdate& update) {
  std::lock_guard<std::mutex> lock(mu_);
  if (update.has_settings()) settings_ = update.settings();
  std::vector<PublicKey> gone;
  if (update.full()) {
    std::set<PublicKey> listed;
    for (const coord::Peer& p : update.upsert_peers()) listed.insert(KeyFrom(p.public_key()));
    for (const auto& [key, info] : peers_) {
      if (!listed.count(key)) gone.push_back(key);
    }
  }
  for (const std::string& k : update.removed_peers()) gone.push_back(KeyFrom(k));
  for (const coord::Peer& p : update.upsert_peers()) UpsertPeer(p);
  for (const PublicKey& key : gone) RemovePeer(key);
  // Routes first, so no data thread looks a removed peer up again, then the device forgets it.
  PublishRoutes();
  for (const PublicKey& key : gone) device_->RemovePeer(key, clock_.Now());
  if (update.has_call_me_maybe()) {
    auto it = peers_.find(KeyFrom(update.call_me_maybe().from_public_key()));
    if (it != peers_.end() && it->second.selector) {
      std::vector<Endpoint> endpoints;
      for (const std::string& e : update.call_me_maybe().endpoints()) {
        absl::StatusOr<Endpoint> parsed = Endpoint::Parse(e);
        if (parsed.ok()) endpoints.push_back(*parsed);
      }
      it->second.selector->OnCallMeMaybe(endpoints, clock_.Now());
    }
  }
}

void JoinAgent::WatchLoop() {
  std::chrono::milliseconds delay = kBackoffStart;
  bool first = true;
  while (!stopping_ && !leaving_) {
    if (!first) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        client_ = std::make_shared<CoordinatorClient>(target_, ca_pem_);
      }
      absl::Status s = Register();
      if (s.code() == absl::StatusCode::kPermissionDenied) {
        TM_LOG_ERROR("the coordinator refused this member: {}", std::string(s.message()));
        refused_ = true;
        break;
      }
      if (!s.ok()) {
        if (!stopping_) TM_LOG_WARN("re-registering: {}", std::string(s.message()));
        Backoff(&delay);
        continue;
      }
    }
    first = false;
    if (stopping_ || leaving_) break;
    absl::Status s = client()->Watch([&](const coord::MapUpdate& update) {
      delay = kBackoffStart;
      Apply(update);
    });
    if (stopping_ || leaving_) break;
    if (s.code() == absl::StatusCode::kPermissionDenied) {
      TM_LOG_ERROR("removed from the mesh by the coordinator: {}", std::string(s.message()));
      refused_ = true;
      break;
    }
    TM_LOG_WARN("coordinator stream ended: {}; reconnecting (established tunnels keep working)",
                std::string(s.message()));
    Backoff(&delay);
  }
}

void JoinAgent::SendDisco(const PeerInfo& info, const disco::Message& message,
                          const Endpoint& to) {
  uint8_t out[disco::kMaxDatagramSize];
  const size_t size = disco::SealWithKey(*info.box, public_key_, message,
                                         absl::Span<uint8_t>(out, sizeof(out)));
  if (size > 0) plane_->SendRaw(absl::Span<const uint8_t>(out, size), to);
  TM_LOG_DEBUG("disco {} to {} ({})", message.index() == 0 ? "ping" : message.index() == 1 ? "pong" : "call-me-maybe", info.name, to.ToString());
}

void JoinAgent::ApplyPath(const PublicKey& key, PeerInfo& info) {
  const disco::Path path = info.selector->CurrentPath();
  if (path == info.applied) return;
  noise::Peer* peer = device_->FindPeer(key);
  if (peer == nullptr) return;
  if (path.kind == disco::PathKind::kDirect) {
    peer->set_endpoint(path.endpoint);
    TM_LOG_INFO("path to {}: direct via {}", info.name, path.endpoint.ToString());
  } else if (path.kind == disco::PathKind::kRelay) {
    peer->set_endpoint(TransportEndpoint::Relay(info.device_id));
    TM_LOG_INFO("path to {}: relay", info.name);
  }
  info.applied = path;
}

bool JoinAgent::OnForeign(absl::Span<const uint8_t> datagram, const Endpoint& from) {
  if (disco::IsDiscoMessage(datagram)) {
    PublicKey sender;
    if (!disco::PeekSender(datagram, &sender)) return true;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(sender);
    if (it == peers_.end() || !it->second.selector) return true;
    PeerInfo& info = it->second;
    disco::Message message;
    if (!disco::OpenWithKey(*info.box, datagram, &message)) return true;
    const MonoTime now = clock_.Now();
    TM_LOG_DEBUG("disco message {} from {} ({})", message.index(), info.name, from.ToString());
    if (const auto* ping = std::get_if<disco::Ping>(&message)) {
      SendDisco(info, disco::Pong{ping->tx_id, from}, from);
      info.selector->OnPingReceived(from, now);
    } else if (const auto* pong = std::get_if<disco::Pong>(&message)) {
      info.selector->OnPong(from, pong->tx_id, now);
    } else if (const auto* cmm = std::get_if<disco::CallMeMaybe>(&message)) {
      info.selector->OnCallMeMaybe(cmm->endpoints, now);
    }
    ApplyPath(sender, info);
    return true;
  }
  if (!stun::LooksLikeStun(datagram)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (!stun_pending_) return true;
  stun::BindingResponse response;
  if (stun::ParseBindingResponse(datagram, stun_txid_, &response) != stun::ParseResult::kOk ||
      response.message_class != stun::MessageClass::kSuccessResponse) {
    return true;
  }
  stun_pending_ = false;
  if (!reflexive_ || !(*reflexive_ == response.mapped_address)) {
    reflexive_ = response.mapped_address;
    endpoints_dirty_ = true;
    TM_LOG_INFO("endpoint found: {} (STUN)", reflexive_->ToString());
    cv_.notify_all();
  }
  return true;
}

void JoinAgent::ReportEndpoints() {
  std::vector<std::string> candidates;
  std::pair<uint32_t, uint32_t> counts;
  {
    // Cleared before the call: a change that lands while it is in flight marks it dirty again.
    std::lock_guard<std::mutex> lock(mu_);
    endpoints_dirty_ = false;
    if (reflexive_) candidates.push_back(reflexive_->ToString());
    counts = path_counts_;
  }
  for (const IpAddress& ip : LocalAddresses(options_.interface_name)) {
    std::string e = Endpoint(ip, socket_->port()).ToString();
    if (std::find(candidates.begin(), candidates.end(), e) == candidates.end()) {
      candidates.push_back(e);
    }
    if (candidates.size() >= 16) break;
  }
  absl::Status s = client()->ReportEndpoints(candidates, counts.first, counts.second);
  std::lock_guard<std::mutex> lock(mu_);
  if (s.ok()) {
    reported_ = candidates;
  } else {
    endpoints_dirty_ = true;
  }
}

void JoinAgent::PathLoop() {
  while (!stopping_) {
    struct Ping {
      const PeerInfo* info;
      disco::PingRequest request;
    };
    const bool relay_up = relay_ != nullptr && relay_->connected();
    {
      std::lock_guard<std::mutex> lock(mu_);
      relay_connected_ = relay_up;
      const MonoTime now = clock_.Now();
      bool wake_reporter = false;
      for (auto& [key, info] : peers_) {
        if (!info.selector) continue;
        info.selector->SetRelayAvailable(relay_connected_);
        info.selector->Tick(now);
        disco::PathActions actions = info.selector->TakeActions();
        for (const disco::PingRequest& ping : actions.pings) {
          SendDisco(info, disco::Ping{ping.tx_id}, ping.endpoint);
        }
        if (actions.send_call_me_maybe) {
          call_me_maybe_queue_.push_back(key);
          wake_reporter = true;
        }
        ApplyPath(key, info);
      }
      // The coordinator shows how this member reaches its peers (MeshPeer status.pathSummary).
      std::pair<uint32_t, uint32_t> counts{0, 0};
      for (const auto& [key, info] : peers_) {
        if (info.applied.kind == disco::PathKind::kDirect) ++counts.first;
        if (info.applied.kind == disco::PathKind::kRelay) ++counts.second;
      }
      if (counts != path_counts_) {
        path_counts_ = counts;
        endpoints_dirty_ = true;
        wake_reporter = true;
      }
      if (wake_reporter) cv_.notify_all();
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping_.load(); });
  }
}

void JoinAgent::StunLoop() {
  auto next_stun = std::chrono::steady_clock::now();
  while (!stopping_) {
    std::string stun_address;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stun_address = ResolveServiceHost(settings_.stun_address());
    }
    if (std::chrono::steady_clock::now() >= next_stun && !stun_address.empty()) {
      absl::StatusOr<Endpoint> server = Endpoint::Parse(stun_address);
      if (server.ok()) {
        uint8_t request[stun::kMaxEncodedSize];
        size_t size = 0;
        {
          std::lock_guard<std::mutex> lock(mu_);
          RandomBytes(absl::Span<uint8_t>(stun_txid_.data(), stun_txid_.size()));
          stun_pending_ = true;
          size = stun::EncodeBindingRequest(stun_txid_, stun::EncodeOptions{},
                                            absl::Span<uint8_t>(request, sizeof(request)));
        }
        if (size > 0) plane_->SendRaw(absl::Span<const uint8_t>(request, size), *server);
      }
      next_stun = std::chrono::steady_clock::now() + kStunInterval;
    }
    bool dirty;
    std::vector<PublicKey> call_me_maybe;
    std::vector<std::string> ours;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(200), [&] {
        return stopping_.load() || endpoints_dirty_ || !call_me_maybe_queue_.empty();
      });
      dirty = endpoints_dirty_;
      call_me_maybe.swap(call_me_maybe_queue_);
      ours = reported_;
    }
    if (stopping_) break;
    if (dirty) {
      ReportEndpoints();
      std::unique_lock<std::mutex> lock(mu_);
      // A failed report (coordinator away) is retried, but not in a tight loop.
      if (endpoints_dirty_) {
        cv_.wait_for(lock, std::chrono::milliseconds(300), [&] { return stopping_.load(); });
      }
    }
    // Ask peers (through the coordinator) to probe us now, so both sides punch at the same time.
    for (const PublicKey& peer : call_me_maybe) {
      absl::Status s = client()->CallMeMaybe(peer, ours);
      TM_LOG_DEBUG("call-me-maybe to {} with {} endpoints: {}", peer.Short(), ours.size(), s.ToString());
      if (!s.ok()) TM_LOG_DEBUG("call-me-maybe to {}: {}", peer.Short(), std::string(s.message()));
    }
  }
}

int JoinAgent::Run(const sigset_t& signals) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  signals_ = &signals;
  int setup = Setup();
  signals_ = nullptr;
  if (setup >= 0) return setup;
  std::thread watch([this] { WatchLoop(); });
  std::thread stun([this] { StunLoop(); });
  std::thread paths([this] { PathLoop(); });
  TM_LOG_INFO("interface {} up; following the network map", options_.interface_name);
  while (!leave_requested_ && !refused_) {
    timespec timeout{0, 200'000'000};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      TM_LOG_INFO("signal {} received: shutting down (still a member; `tunnelmesh-agent leave` "
                  "removes it)", sig);
      break;
    }
    if (!plane_->running()) {
      TM_LOG_ERROR("data plane failed: {}", plane_->failure().ToString());
      break;
    }
  }
  if (leave_requested_) TM_LOG_INFO("left the mesh: shutting down");
  stopping_ = true;
  cv_.notify_all();
  client()->CancelWatch();
  watch.join();
  stun.join();
  paths.join();
  control_.reset();
  // The data threads send through relay_: stop them first.
  plane_->Stop();
  relay_.reset();
  if (absl::Status s = link_->Teardown(); !s.ok()) {
    TM_LOG_WARN("removing addresses of {}: {}", options_.interface_name, s.ToString());
  }
  return plane_->failure().ok() && !refused_ ? 0 : kExitFailure;
}

}  // namespace

int RunJoin(const JoinOptions& options, const sigset_t& signals) {
  JoinAgent agent(options);
  return agent.Run(signals);
}

}  // namespace tunnelmesh
