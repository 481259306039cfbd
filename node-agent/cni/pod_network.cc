#include "node-agent/cni/pod_network.h"

// <net/if.h> before any header that pulls in <linux/if.h> (the kernel headers and libnl's).
// clang-format off
#include <net/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
// clang-format on
#include <fcntl.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tunnelmesh::cni {
namespace {

struct SocketDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct VethDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_veth_release(l); }
};
struct AddrDeleter {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct RouteDeleter {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using SocketPtr = std::unique_ptr<nl_sock, SocketDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;

// A file descriptor closed on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::StatusCode CodeFor(int nl_result) {
  switch (-nl_result) {
    case NLE_EXIST:
      return absl::StatusCode::kAlreadyExists;
    case NLE_NODEV:
    case NLE_OBJ_NOTFOUND:
    case NLE_NOADDR:
      return absl::StatusCode::kNotFound;
    case NLE_PERM:
      return absl::StatusCode::kPermissionDenied;
    case NLE_INVAL:
    case NLE_RANGE:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status Failure(const std::string& action, int nl_result) {
  std::string text = absl::StrCat(action, ": ", nl_geterror(nl_result));
  if (-nl_result == NLE_PERM) absl::StrAppend(&text, " (tunnelmesh-cni needs CAP_NET_ADMIN)");
  return absl::Status(CodeFor(nl_result), text);
}

absl::StatusOr<SocketPtr> OpenSocket() {
  SocketPtr sock(nl_socket_alloc());
  if (sock == nullptr) return absl::ResourceExhaustedError("allocating a netlink socket");
  if (int rc = nl_connect(sock.get(), NETLINK_ROUTE); rc < 0) {
    return Failure("opening a NETLINK_ROUTE socket", rc);
  }
  return sock;
}

// Enters a network namespace for its lifetime (this thread only), then returns to the original.
class NetnsGuard {
 public:
  static absl::StatusOr<std::unique_ptr<NetnsGuard>> Enter(int target_fd, const std::string& path) {
    Fd original(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (original.get() < 0) {
      return absl::InternalError(
          absl::StrCat("opening /proc/thread-self/ns/net: ", std::strerror(errno)));
    }
    if (setns(target_fd, CLONE_NEWNET) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("entering the pod's network namespace ", path, ": ", std::strerror(errno)));
    }
    return std::unique_ptr<NetnsGuard>(new NetnsGuard(std::move(original)));
  }
  ~NetnsGuard() {
    // Failing to return would leave the rest of the plugin in the pod's namespace: stop instead.
    if (setns(original_.get(), CLONE_NEWNET) != 0) std::abort();
  }

 private:
  explicit NetnsGuard(Fd original) : original_(std::move(original)) {}
  Fd original_;
};

absl::StatusOr<Fd> OpenNetns(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int error = errno;
    return absl::Status(
        error == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
        absl::StrCat("opening the pod's network namespace ", path,
                     " (CNI_NETNS): ", std::strerror(error)));
  }
  return fd;
}

// The link named `name`, nullptr when there is none.
absl::StatusOr<LinkPtr> FindLink(nl_sock* sock, const std::string& name) {
  rtnl_link* link = nullptr;
  int rc = rtnl_link_get_kernel(sock, 0, name.c_str(), &link);
  if (rc == -NLE_NODEV || rc == -NLE_OBJ_NOTFOUND) return LinkPtr();
  if (rc < 0) return Failure(absl::StrCat("looking up interface ", name), rc);
  return LinkPtr(link);
}

absl::StatusOr<LinkPtr> GetLink(nl_sock* sock, const std::string& name, const char* where) {
  absl::StatusOr<LinkPtr> link = FindLink(sock, name);
  if (!link.ok()) return link.status();
  if (*link == nullptr) {
    return absl::NotFoundError(absl::StrCat("interface ", name, " is missing in ", where));
  }
  return link;
}

absl::Status SetUp(nl_sock* sock, rtnl_link* link) {
  LinkPtr change(rtnl_link_alloc());
  if (change == nullptr) return absl::ResourceExhaustedError("out of memory");
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (int rc = rtnl_link_change(sock, link, change.get(), 0); rc < 0) {
    return Failure(absl::StrCat("setting ", rtnl_link_get_name(link), " up"), rc);
  }
  return absl::OkStatus();
}

NlAddrPtr ToNlAddr(const IpAddress& address, int prefix_length) {
  NlAddrPtr result(
      nl_addr_build(address.is_v4() ? AF_INET : AF_INET6, address.bytes(), address.byte_length()));
  if (result != nullptr) nl_addr_set_prefixlen(result.get(), prefix_length);
  return result;
}

absl::Status AddAddress(nl_sock* sock, int ifindex, const std::string& ifname,
                        const IpAddress& address, int prefix_length) {
  const std::string action =
      absl::StrCat("adding address ", address.ToString(), "/", prefix_length, " to ", ifname);
  std::unique_ptr<rtnl_addr, AddrDeleter> addr(rtnl_addr_alloc());
  NlAddrPtr local = ToNlAddr(address, prefix_length);
  if (addr == nullptr || local == nullptr) return absl::ResourceExhaustedError(action);
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_family(addr.get(), address.is_v4() ? AF_INET : AF_INET6);
  if (int rc = rtnl_addr_set_local(addr.get(), local.get()); rc < 0) return Failure(action, rc);
  rtnl_addr_set_prefixlen(addr.get(), prefix_length);
  // A point-to-point veth has no neighbour to collide with: skip duplicate address detection,
  // which would keep the address unusable for about a second (RFC 4862 section 5.4).
  if (address.is_v6()) rtnl_addr_set_flags(addr.get(), IFA_F_NODAD);
  if (int rc = rtnl_addr_add(sock, addr.get(), 0); rc < 0 && rc != -NLE_EXIST) {
    return Failure(action, rc);
  }
  return absl::OkStatus();
}

struct RouteSpec {
  Prefix destination;
  std::optional<IpAddress> gateway;  // IPv6: fe80::1, on-link
  std::optional<IpAddress> source;   // preferred source address
};

absl::Status AddRoute(nl_sock* sock, int ifindex, const std::string& ifname,
                      const RouteSpec& spec) {
  const std::string action =
      absl::StrCat("adding route ", spec.destination.ToString(), " via ", ifname);
  std::unique_ptr<rtnl_route, RouteDeleter> route(rtnl_route_alloc());
  NlAddrPtr destination = ToNlAddr(spec.destination.address(), spec.destination.length());
  rtnl_nexthop* nexthop = rtnl_route_nh_alloc();
  if (route == nullptr || destination == nullptr || nexthop == nullptr) {
    if (nexthop != nullptr) rtnl_route_nh_free(nexthop);
    return absl::ResourceExhaustedError(action);
  }
  const bool v4 = spec.destination.address().is_v4();
  rtnl_route_set_family(route.get(), v4 ? AF_INET : AF_INET6);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), spec.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
  rtnl_route_nh_set_ifindex(nexthop, ifindex);
  NlAddrPtr gateway;
  if (spec.gateway) {
    gateway = ToNlAddr(*spec.gateway, spec.gateway->bit_length());
    if (gateway == nullptr) {
      rtnl_route_nh_free(nexthop);
      return absl::ResourceExhaustedError(action);
    }
    rtnl_route_nh_set_gateway(nexthop, gateway.get());
    // The gateway is the host end's address: on the link by construction, whether or not the
    // kernel has the link's fe80::/64 route yet.
    rtnl_route_nh_set_flags(nexthop, RTNH_F_ONLINK);
  }
  rtnl_route_add_nexthop(route.get(), nexthop);  // The route owns the nexthop from here on.
  if (int rc = rtnl_route_set_dst(route.get(), destination.get()); rc < 0) {
    return Failure(action, rc);
  }
  NlAddrPtr source;
  if (spec.source) {
    source = ToNlAddr(*spec.source, spec.source->bit_length());
    if (source == nullptr) return absl::ResourceExhaustedError(action);
    if (int rc = rtnl_route_set_pref_src(route.get(), source.get()); rc < 0) {
      return Failure(action, rc);
    }
  }
  if (int rc = rtnl_route_add(sock, route.get(), NLM_F_REPLACE | NLM_F_CREATE); rc < 0) {
    return Failure(action, rc);
  }
  return absl::OkStatus();
}

absl::Status WriteSysctl(const std::string& path, const char* value) {
  std::ofstream file(path);
  file << value;
  file.flush();
  if (!file) {
    return absl::FailedPreconditionError(
        absl::StrCat("writing ", value, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string ReadSysctl(const std::string& path) {
  std::ifstream file(path);
  std::string value;
  std::getline(file, value);
  return std::string(absl::StripAsciiWhitespace(value));
}

bool IsHostInterfaceName(std::string_view name) {
  if (name.size() != 15 || name.substr(0, 3) != "tmp") return false;
  for (char c : name.substr(3)) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// The pod end's part of CreatePodNetwork, inside the pod's namespace.
absl::StatusOr<std::string> ConfigurePodEnd(const PodNetworkSpec& spec, const IpAddress& gateway) {
  absl::StatusOr<SocketPtr> sock = OpenSocket();
  if (!sock.ok()) return sock.status();
  absl::StatusOr<LinkPtr> link = GetLink(sock->get(), spec.pod_interface, "the pod");
  if (!link.ok()) return link.status();
  const int ifindex = rtnl_link_get_ifindex(link->get());
  std::optional<IpAddress> v4;
  std::optional<IpAddress> v6;
  for (const IpAddress& address : spec.addresses) {
    if (absl::Status s =
            AddAddress(sock->get(), ifindex, spec.pod_interface, address, address.bit_length());
        !s.ok()) {
      return s;
    }
    (address.is_v4() ? v4 : v6) = address;
  }
  if (absl::Status s = SetUp(sock->get(), link->get()); !s.ok()) return s;
  for (const Prefix& range : spec.routes) {
    RouteSpec route{range, std::nullopt, range.address().is_v4() ? v4 : v6};
    if (!route.source.has_value()) continue;  // no address of this family
    if (range.address().is_v6()) route.gateway = gateway;
    if (absl::Status s = AddRoute(sock->get(), ifindex, spec.pod_interface, route); !s.ok()) {
      return s;
    }
  }
  char mac[32] = "";
  if (nl_addr* lladdr = rtnl_link_get_addr(link->get()); lladdr != nullptr) {
    nl_addr2str(lladdr, mac, sizeof(mac));
  }
  return std::string(mac);
}

absl::StatusOr<std::string> CreateAndConfigure(const PodNetworkSpec& spec, nl_sock* sock,
                                               int netns_fd) {
  std::unique_ptr<rtnl_link, VethDeleter> veth(rtnl_link_veth_alloc());
  if (veth == nullptr) return absl::ResourceExhaustedError("allocating a veth link");
  rtnl_link* peer = rtnl_link_veth_get_peer(veth.get());
  rtnl_link_set_name(veth.get(), spec.host_interface.c_str());
  rtnl_link_set_name(peer, spec.pod_interface.c_str());
  if (spec.mtu != 0) {
    rtnl_link_set_mtu(veth.get(), spec.mtu);
    rtnl_link_set_mtu(peer, spec.mtu);
  }
  rtnl_link_set_ns_fd(peer, netns_fd);
  rtnl_link_put(peer);  // rtnl_link_veth_get_peer took a reference.
  if (int rc = rtnl_link_add(sock, veth.get(), NLM_F_CREATE | NLM_F_EXCL); rc < 0) {
    return Failure(absl::StrCat("creating the veth pair ", spec.host_interface, " (host) and ",
                                spec.pod_interface, " (pod)"),
                   rc);
  }
  absl::StatusOr<LinkPtr> host = GetLink(sock, spec.host_interface, "the host");
  if (!host.ok()) return host.status();
  const int host_index = rtnl_link_get_ifindex(host->get());
  bool any_v4 = false;
  bool any_v6 = false;
  for (const IpAddress& address : spec.addresses) (address.is_v4() ? any_v4 : any_v6) = true;
  if (any_v4) {
    // The pod's on-link IPv4 routes make it ask for every mesh address by ARP; the host end
    // answers for them (proxy ARP), without the default delay of up to 0.8 s.
    const std::string conf = absl::StrCat("/proc/sys/net/ipv4/conf/", spec.host_interface);
    const std::string neigh = absl::StrCat("/proc/sys/net/ipv4/neigh/", spec.host_interface);
    if (absl::Status s = WriteSysctl(conf + "/proxy_arp", "1"); !s.ok()) return s;
    if (absl::Status s = WriteSysctl(neigh + "/proxy_delay", "0"); !s.ok()) return s;
  }
  const IpAddress gateway = *IpAddress::Parse("fe80::1");
  if (any_v6) {
    if (absl::Status s = AddAddress(sock, host_index, spec.host_interface, gateway, 64); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = SetUp(sock, host->get()); !s.ok()) return s;
  for (const IpAddress& address : spec.addresses) {
    RouteSpec route{Prefix(address, address.bit_length()), std::nullopt, std::nullopt};
    if (absl::Status s = AddRoute(sock, host_index, spec.host_interface, route); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<NetnsGuard>> inside = NetnsGuard::Enter(netns_fd, spec.netns);
  if (!inside.ok()) return inside.status();
  return ConfigurePodEnd(spec, gateway);
}

}  // namespace

absl::Status CheckForwarding(const std::vector<IpAddress>& addresses) {
  bool v4 = false;
  bool v6 = false;
  for (const IpAddress& address : addresses) (address.is_v4() ? v4 : v6) = true;
  if (v4 && ReadSysctl("/proc/sys/net/ipv4/ip_forward") != "1") {
    return absl::FailedPreconditionError(
        "this node does not forward IPv4, so the pod's mesh traffic cannot reach the agent's "
        "interface: set sysctl net.ipv4.ip_forward=1");
  }
  if (v6 && ReadSysctl("/proc/sys/net/ipv6/conf/all/forwarding") != "1") {
    return absl::FailedPreconditionError(
        "this node does not forward IPv6, so the pod's mesh traffic cannot reach the agent's "
        "interface: set sysctl net.ipv6.conf.all.forwarding=1");
  }
  return absl::OkStatus();
}

absl::Status DeleteHostInterface(const std::string& host_interface) {
  absl::StatusOr<SocketPtr> sock = OpenSocket();
  if (!sock.ok()) return sock.status();
  LinkPtr link(rtnl_link_alloc());
  if (link == nullptr) return absl::ResourceExhaustedError("out of memory");
  rtnl_link_set_name(link.get(), host_interface.c_str());
  int rc = rtnl_link_delete(sock->get(), link.get());
  if (rc < 0 && rc != -NLE_NODEV && rc != -NLE_OBJ_NOTFOUND) {
    return Failure(absl::StrCat("removing interface ", host_interface), rc);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CreatePodNetwork(const PodNetworkSpec& spec) {
  absl::StatusOr<Fd> netns = OpenNetns(spec.netns);
  if (!netns.ok()) return netns.status();
  // A repeated ADD: the old pair goes with its host end.
  if (absl::Status s = DeleteHostInterface(spec.host_interface); !s.ok()) return s;
  {
    absl::StatusOr<std::unique_ptr<NetnsGuard>> inside =
        NetnsGuard::Enter(netns->get(), spec.netns);
    if (!inside.ok()) return inside.status();
    absl::StatusOr<SocketPtr> sock = OpenSocket();
    if (!sock.ok()) return sock.status();
    absl::StatusOr<LinkPtr> existing = FindLink(sock->get(), spec.pod_interface);
    if (!existing.ok()) return existing.status();
    if (*existing != nullptr) {
      return absl::AlreadyExistsError(
          absl::StrCat("the pod already has an interface named ", spec.pod_interface,
                       ": choose another \"podInterface\" in the network configuration"));
    }
  }
  absl::StatusOr<SocketPtr> sock = OpenSocket();
  if (!sock.ok()) return sock.status();
  absl::StatusOr<std::string> mac = CreateAndConfigure(spec, sock->get(), netns->get());
  if (!mac.ok()) {
    // Take back the half-made pair; the error that matters is the first.
    (void)DeleteHostInterface(spec.host_interface);
    return mac.status();
  }
  return mac;
}

absl::Status CheckPodNetwork(const PodNetworkSpec& spec) {
  {
    absl::StatusOr<SocketPtr> sock = OpenSocket();
    if (!sock.ok()) return sock.status();
    absl::StatusOr<LinkPtr> host = GetLink(sock->get(), spec.host_interface, "the host");
    if (!host.ok()) return host.status();
  }
  absl::StatusOr<Fd> netns = OpenNetns(spec.netns);
  if (!netns.ok()) return netns.status();
  absl::StatusOr<std::unique_ptr<NetnsGuard>> inside = NetnsGuard::Enter(netns->get(), spec.netns);
  if (!inside.ok()) return inside.status();
  absl::StatusOr<SocketPtr> sock = OpenSocket();
  if (!sock.ok()) return sock.status();
  absl::StatusOr<LinkPtr> link = GetLink(sock->get(), spec.pod_interface, "the pod");
  if (!link.ok()) return link.status();
  if ((rtnl_link_get_flags(link->get()) & IFF_UP) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("interface ", spec.pod_interface, " in the pod is down"));
  }
  const int ifindex = rtnl_link_get_ifindex(link->get());
  nl_cache* raw_cache = nullptr;
  if (int rc = rtnl_addr_alloc_cache(sock->get(), &raw_cache); rc < 0) {
    return Failure("listing the pod's addresses", rc);
  }
  CachePtr cache(raw_cache);
  for (const IpAddress& address : spec.addresses) {
    bool found = false;
    for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr && !found;
         object = nl_cache_get_next(object)) {
      auto* addr = reinterpret_cast<rtnl_addr*>(object);
      nl_addr* local = rtnl_addr_get_local(addr);
      found =
          rtnl_addr_get_ifindex(addr) == ifindex && local != nullptr &&
          nl_addr_get_len(local) == static_cast<unsigned>(address.byte_length()) &&
          std::memcmp(nl_addr_get_binary_addr(local), address.bytes(), address.byte_length()) == 0;
    }
    if (!found) {
      return absl::NotFoundError(absl::StrCat("interface ", spec.pod_interface,
                                              " in the pod lacks its mesh address ",
                                              address.ToString()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListHostInterfaces() {
  absl::StatusOr<SocketPtr> sock = OpenSocket();
  if (!sock.ok()) return sock.status();
  nl_cache* raw_cache = nullptr;
  if (int rc = rtnl_link_alloc_cache(sock->get(), AF_UNSPEC, &raw_cache); rc < 0) {
    return Failure("listing the host's interfaces", rc);
  }
  CachePtr cache(raw_cache);
  std::vector<std::string> names;
  for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
       object = nl_cache_get_next(object)) {
    const char* name = rtnl_link_get_name(reinterpret_cast<rtnl_link*>(object));
    if (name != nullptr && IsHostInterfaceName(name)) names.emplace_back(name);
  }
  return names;
}

}  // namespace tunnelmesh::cni
