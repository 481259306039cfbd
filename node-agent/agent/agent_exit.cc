// The agent's exit-peer wiring (node-agent/exit/exit_controller.h): creating the controller,
// marking the agent's UDP socket, and the service addresses kept out of the tunnel.
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "lib/base/log.h"
#include "lib/disco/path_selector.h"
#include "node-agent/agent/agent.h"

namespace tunnelmesh {
namespace {

// The addresses `host` (a name or an address, without brackets or port) resolves to.
std::vector<IpAddress> ResolveHost(const std::string& host) {
  std::vector<IpAddress> out;
  if (host.empty()) return out;
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(host); ip.ok()) return {*ip};
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &list) != 0) return out;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    absl::StatusOr<Endpoint> e = Endpoint::FromSockaddr(a->ai_addr, a->ai_addrlen);
    if (e.ok()) out.push_back(e->address());
  }
  freeaddrinfo(list);
  return out;
}

// The host of "wss://HOST:PORT/path", "HOST:PORT" or "[V6]:PORT" (empty when there is none).
std::string HostOf(std::string address) {
  if (const size_t scheme = address.find("://"); scheme != std::string::npos) {
    address = address.substr(scheme + 3);
  }
  address = address.substr(0, address.find('/'));
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    return close == std::string::npos ? "" : address.substr(1, close - 1);
  }
  return address.substr(0, address.rfind(':'));
}

// The prefixes of this host's up interfaces other than `own` and loopback (--exit-allow-lan).
std::vector<Prefix> ConnectedPrefixes(const std::string& own) {
  std::vector<Prefix> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_netmask == nullptr || !(a->ifa_flags & IFF_UP) ||
        (a->ifa_flags & IFF_LOOPBACK) || own == a->ifa_name) {
      continue;
    }
    const int family = a->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    const socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    absl::StatusOr<Endpoint> address = Endpoint::FromSockaddr(a->ifa_addr, len);
    absl::StatusOr<Endpoint> mask = Endpoint::FromSockaddr(a->ifa_netmask, len);
    if (!address.ok() || !mask.ok()) continue;
    int length = 0;
    const uint8_t* bytes = mask->address().bytes();
    for (int i = 0; i < mask->address().byte_length(); ++i) length += __builtin_popcount(bytes[i]);
    const Prefix prefix(address->address(), length);
    if (std::find(out.begin(), out.end(), prefix) == out.end()) out.push_back(prefix);
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

absl::Status Agent::NoDefaultRoutes::ReplaceRoutes(absl::Span<const Prefix> prefixes) {
  if (!enabled) return next_->ReplaceRoutes(prefixes);
  std::vector<Prefix> kept;
  for (const Prefix& p : prefixes) {
    if (p.length() != 0) kept.push_back(p);
  }
  return next_->ReplaceRoutes(kept);
}

absl::Status Agent::StartExit() {
  if (!params_.exit.has_value()) return absl::OkStatus();
  exit_ = std::make_unique<ExitController>(
      params_.interface_name, *params_.exit, std::make_unique<SubprocessRunner>(),
      params_.state_dir, peers_.get(),
      [this](const PublicKey& key) {
        ExitSample sample;
        if (const noise::Peer* peer = device_->FindPeer(key)) {
          const noise::PeerStats& stats = peer->stats();
          sample.tx_packets = stats.tx_packets.load(std::memory_order_relaxed);
          sample.rx_packets = stats.rx_packets.load(std::memory_order_relaxed);
          sample.handshakes_initiated = stats.handshakes_initiated.load(std::memory_order_relaxed);
          sample.handshakes_completed = stats.handshakes_completed.load(std::memory_order_relaxed);
        }
        sample.direct_path = paths_ != nullptr && paths_->HasPeer(key) &&
                             paths_->PathOf(key).kind == disco::PathKind::kDirect;
        return sample;
      },
      [this] { return ConnectedPrefixes(params_.interface_name); });
  exit_->SetHandshakeHook([this](const PublicKey& key) {
    noise::Peer* peer = device_->FindPeer(key);
    if (peer == nullptr || plane_ == nullptr) return;
    device_->Initiate(peer, clock_.Now(), clock_.WallNow(),
                      [this](const TransportEndpoint& to, absl::Span<const uint8_t> bytes) {
                        plane_->SendRaw(bytes, to);
                      });
  });
  // Asked for here (--exit-peer, or a full-tunnel config file): what cannot be set up fails the
  // start, since traffic would otherwise leave outside the tunnel. Otherwise (an exit role may
  // come from the MeshPeer later) it is a warning, and `status` shows the error if the role comes.
  const bool asked = params_.full_tunnel || params_.exit->requested;
  auto problem = [asked](const absl::Status& s, const std::string& what) {
    if (asked) return absl::Status(s.code(), what + ": " + std::string(s.message()));
    TM_LOG_WARN("{}: {}; exit peers will not work on this host", what, std::string(s.message()));
    return absl::OkStatus();
  };
  // The agent's own datagrams (to peers, STUN) never enter the tunnel, wherever they go.
  const uint32_t mark = exit_->fwmark();
  if (setsockopt(socket_->readable_fd(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    absl::Status s = problem(absl::PermissionDeniedError(std::string(std::strerror(errno)) +
                                                         " (the agent needs CAP_NET_ADMIN)"),
                             "marking the UDP socket for exit routing (SO_MARK)");
    if (!s.ok()) return s;
  }
  if (absl::Status s = exit_->Start(); !s.ok()) {
    s = problem(s,
                "removing a previous run's exit routing (it needs `ip` from iproute2 and `nft` "
                "from nftables)");
    if (!s.ok()) return s;
  }
  bool ipv6 = false;
  for (const auto& [ip, length] : params_.addresses) ipv6 = ipv6 || ip.is_v6();
  exit_->SetMesh(params_.mesh_cidrs, ipv6);
  if (params_.full_tunnel) {
    route_filter_.enabled = true;
    exit_->SetStaticFullTunnel(true, absl::Now());
    TM_LOG_INFO(
        "full tunnel: everything but the agent's own traffic and the peers' endpoints is routed "
        "into {} (policy routing, table {})",
        params_.interface_name, exit_->fwmark());
  } else if (params_.exit->requested) {
    // Fail closed from the start: nothing leaves directly before the map names an exit.
    exit_->OnPeersChanged(absl::Now());
  }
  return absl::OkStatus();
}

void Agent::UpdateExitServices() {
  if (!exit_) return;
  std::vector<IpAddress> addresses = ResolveHost(params_.coordinator_host);
  for (const std::string& service :
       {ResolveServiceHost(settings_.relay_url()), ResolveServiceHost(settings_.stun_address())}) {
    for (const IpAddress& ip : ResolveHost(HostOf(service))) addresses.push_back(ip);
  }
  exit_->SetServiceAddresses(std::move(addresses), absl::Now());
}

}  // namespace tunnelmesh
