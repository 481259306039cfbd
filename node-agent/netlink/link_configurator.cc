#include "node-agent/netlink/link_configurator.h"

// <net/if.h> before any header that pulls in <linux/if.h> (the kernel headers and libnl's).
// clang-format off
#include <net/if.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
// clang-format on
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace tunnelmesh {
namespace netlink_internal {

struct KernelError {
  int error = 0;        // errno from the kernel's NLMSG_ERROR; 0 if none arrived
  std::string message;  // the extended-ack text (NLMSGERR_ATTR_MSG), often empty
};

}  // namespace netlink_internal

namespace {

using netlink_internal::KernelError;

// How long SetUp and AddAddress wait for addresses to accept packets. The kernel's work queue
// normally takes well under a millisecond; this bound only matters when something is wrong.
constexpr std::chrono::milliseconds kAddressReadyTimeout(2000);
// Re-check at least this often while waiting, in case a notification was lost (ENOBUFS).
constexpr std::chrono::milliseconds kAddressRecheckInterval(100);

// RAII for libnl's reference-counted objects.
struct LinkDeleter {
  void operator()(rtnl_link* link) const { rtnl_link_put(link); }
};
struct AddrDeleter {
  void operator()(rtnl_addr* addr) const { rtnl_addr_put(addr); }
};
struct RouteDeleter {
  void operator()(rtnl_route* route) const { rtnl_route_put(route); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* addr) const { nl_addr_put(addr); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using RoutePtr = std::unique_ptr<rtnl_route, RouteDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
struct MsgDeleter {
  void operator()(nl_msg* msg) const { nlmsg_free(msg); }
};
struct CbDeleter {
  void operator()(nl_cb* cb) const { nl_cb_put(cb); }
};

// A plain netlink socket subscribed to route changes, only used to sleep until something changes.
class RouteEvents {
 public:
  RouteEvents() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
    if (fd_ < 0) return;
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_IFADDR;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RouteEvents() {
    if (fd_ >= 0) close(fd_);
  }
  RouteEvents(const RouteEvents&) = delete;
  RouteEvents& operator=(const RouteEvents&) = delete;

  // Waits up to `timeout` for a notification and discards whatever arrived (the caller re-checks
  // the state itself). Without a socket it just sleeps, as a last resort.
  void Wait(std::chrono::milliseconds timeout) {
    if (fd_ < 0) {
      usleep(static_cast<useconds_t>(timeout.count()) * 1000);
      return;
    }
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(timeout.count()));
    char buffer[8192];
    while (recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT) > 0 || errno == ENOBUFS) {
    }
  }

 private:
  int fd_ = -1;
};

// The answer to an RTM_GETROUTE request: the route's type, then the ACK libnl asks for with every
// request (NLM_F_ACK). Reading up to the ACK keeps libnl's sequence numbers in step.
struct RouteAnswer {
  int type = -1;
  bool acked = false;
};

int RecordRouteType(nl_msg* msg, void* arg) {
  const nlmsghdr* header = nlmsg_hdr(msg);
  if (header->nlmsg_type == RTM_NEWROUTE &&
      nlmsg_datalen(header) >= static_cast<int>(sizeof(rtmsg))) {
    rtmsg route;
    std::memcpy(&route, nlmsg_data(header), sizeof(route));
    static_cast<RouteAnswer*>(arg)->type = route.rtm_type;
  }
  return NL_OK;
}

int RecordAck(nl_msg* /*msg*/, void* arg) {
  static_cast<RouteAnswer*>(arg)->acked = true;
  return NL_STOP;
}

int Family(const IpAddress& address) { return address.is_v4() ? AF_INET : AF_INET6; }

NlAddrPtr ToNlAddr(const IpAddress& address, int prefix_length) {
  NlAddrPtr result(nl_addr_build(Family(address), address.bytes(), address.byte_length()));
  if (result != nullptr) nl_addr_set_prefixlen(result.get(), prefix_length);
  return result;
}

// libnl calls this for every NLMSG_ERROR carrying a non-zero error. It keeps the errno (libnl
// itself only reports its own, coarser NLE_* code) and the extended-ack message, which sits after
// the echoed request as netlink attributes (see netlink_ack() in the kernel and
// include/uapi/linux/netlink.h). Bounds are checked against the message length throughout.
int RecordKernelError(sockaddr_nl* /*peer*/, nlmsgerr* error, void* arg) {
  auto* out = static_cast<KernelError*>(arg);
  out->error = -error->error;
  out->message.clear();
  const auto* message = reinterpret_cast<const uint8_t*>(error) - NLMSG_HDRLEN;
  nlmsghdr header;
  std::memcpy(&header, message, sizeof(header));
  if ((header.nlmsg_flags & NLM_F_ACK_TLVS) == 0) return NL_STOP;
  size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nlmsgerr));
  if ((header.nlmsg_flags & NLM_F_CAPPED) == 0) {
    if (error->msg.nlmsg_len < NLMSG_HDRLEN) return NL_STOP;
    offset += NLMSG_ALIGN(error->msg.nlmsg_len - NLMSG_HDRLEN);
  }
  const size_t end = header.nlmsg_len;
  while (offset + NLA_HDRLEN <= end) {
    nlattr attribute;
    std::memcpy(&attribute, message + offset, sizeof(attribute));
    if (attribute.nla_len < NLA_HDRLEN || offset + attribute.nla_len > end) break;
    if ((attribute.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char* text = reinterpret_cast<const char*>(message + offset + NLA_HDRLEN);
      out->message.assign(text, strnlen(text, attribute.nla_len - NLA_HDRLEN));
    }
    offset += NLA_ALIGN(attribute.nla_len);
  }
  return NL_STOP;
}

absl::StatusCode CodeForErrno(int error) {
  switch (error) {
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EPERM:
      return absl::StatusCode::kPermissionDenied;
    case EACCES:  // e.g. "IPv6 is disabled on this device"; capabilities fail with EPERM.
      return absl::StatusCode::kFailedPrecondition;
    case ENODEV:
    case ESRCH:
    case ENOENT:
    case EADDRNOTAVAIL:
      return absl::StatusCode::kNotFound;
    case ENETDOWN:
    case ENETUNREACH:
      return absl::StatusCode::kFailedPrecondition;
    case EINVAL:
    case ERANGE:
    case EAFNOSUPPORT:
    case EOPNOTSUPP:
      return absl::StatusCode::kInvalidArgument;
    case EAGAIN:
    case EBUSY:
    case ENOBUFS:
    case ENOMEM:
    case EINTR:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kUnknown;
  }
}

// Deleting something that is already gone is success for Teardown and ReplaceRoutes.
bool IsGone(const absl::Status& status) { return status.code() == absl::StatusCode::kNotFound; }

// A hashable identity for a prefix.
std::string PrefixKey(const Prefix& prefix) {
  std::string key(reinterpret_cast<const char*>(prefix.address().bytes()),
                  prefix.address().byte_length());
  key.push_back(static_cast<char>(prefix.length()));
  return key;
}

}  // namespace

void LinkConfigurator::SocketDeleter::operator()(nl_sock* socket) const { nl_socket_free(socket); }

absl::StatusOr<std::unique_ptr<LinkConfigurator>> LinkConfigurator::Create(
    std::string_view interface_name) {
  std::unique_ptr<nl_sock, SocketDeleter> socket(nl_socket_alloc());
  if (socket == nullptr) return absl::ResourceExhaustedError("allocating a netlink socket");
  auto kernel_error = std::make_unique<KernelError>();
  nl_socket_modify_err_cb(socket.get(), NL_CB_CUSTOM, &RecordKernelError, kernel_error.get());
  if (int rc = nl_connect(socket.get(), NETLINK_ROUTE); rc < 0) {
    return absl::UnavailableError(
        absl::StrCat("opening a NETLINK_ROUTE socket: ", nl_geterror(rc)));
  }
  // Ask for the kernel's explanation with each error, and not for a copy of our own request.
  int on = 1;
  setsockopt(nl_socket_get_fd(socket.get()), SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof(on));
  setsockopt(nl_socket_get_fd(socket.get()), SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof(on));

  std::string name(interface_name);
  rtnl_link* raw_link = nullptr;
  if (int rc = rtnl_link_get_kernel(socket.get(), 0, name.c_str(), &raw_link); rc < 0) {
    if (kernel_error->error == ENODEV || rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV) {
      return absl::NotFoundError(
          absl::StrCat("interface ", name,
                       " does not exist in this network namespace (create the TUN device "
                       "first)"));
    }
    return absl::Status(CodeForErrno(kernel_error->error),
                        absl::StrCat("looking up interface ", name, ": ",
                                     kernel_error->error != 0 ? std::strerror(kernel_error->error)
                                                              : nl_geterror(rc)));
  }
  LinkPtr link(raw_link);
  int index = rtnl_link_get_ifindex(link.get());
  return std::unique_ptr<LinkConfigurator>(
      new LinkConfigurator(std::move(socket), std::move(kernel_error), std::move(name), index));
}

LinkConfigurator::LinkConfigurator(std::unique_ptr<nl_sock, SocketDeleter> socket,
                                   std::unique_ptr<KernelError> kernel_error,
                                   std::string interface_name, int interface_index)
    : socket_(std::move(socket)),
      kernel_error_(std::move(kernel_error)),
      interface_name_(std::move(interface_name)),
      interface_index_(interface_index) {}

LinkConfigurator::~LinkConfigurator() {
  if (absl::Status status = Teardown(); !status.ok()) {
    TM_LOG_WARN("could not remove everything added to the interface interface={} error={}",
                interface_name_, status.ToString());
  }
}

absl::Status LinkConfigurator::Failure(const std::string& action, int nl_result) const {
  const KernelError& kernel = *kernel_error_;
  if (kernel.error == 0) {
    // The request failed inside libnl (memory, message building): no errno to go by.
    return absl::InternalError(absl::StrCat(action, ": ", nl_geterror(nl_result)));
  }
  std::string text = absl::StrCat(action, ": ", std::strerror(kernel.error));
  if (!kernel.message.empty()) absl::StrAppend(&text, " (kernel: ", kernel.message, ")");
  if (kernel.error == EPERM) {
    absl::StrAppend(&text, " (the agent needs CAP_NET_ADMIN)");
  }
  return absl::Status(CodeForErrno(kernel.error), text);
}

absl::Status LinkConfigurator::ChangeLink(const std::string& action, int mtu, bool up) {
  LinkPtr original(rtnl_link_alloc());
  LinkPtr change(rtnl_link_alloc());
  if (original == nullptr || change == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(action, ": out of memory"));
  }
  rtnl_link_set_ifindex(original.get(), interface_index_);
  if (mtu > 0) rtnl_link_set_mtu(change.get(), static_cast<unsigned>(mtu));
  if (up) rtnl_link_set_flags(change.get(), IFF_UP);
  *kernel_error_ = {};
  if (int rc = rtnl_link_change(socket_.get(), original.get(), change.get(), 0); rc < 0) {
    return Failure(action, rc);
  }
  return absl::OkStatus();
}

absl::Status LinkConfigurator::SetMtu(int mtu) {
  std::string action = absl::StrCat("setting MTU of ", interface_name_, " to ", mtu);
  if (mtu <= 0) return absl::InvalidArgumentError(absl::StrCat(action, ": must be positive"));
  return ChangeLink(action, mtu, /*up=*/false);
}

absl::Status LinkConfigurator::SetUp() {
  absl::Status changed =
      ChangeLink(absl::StrCat("setting ", interface_name_, " up"), /*mtu=*/0, /*up=*/true);
  if (!changed.ok()) return changed;
  up_ = true;
  std::vector<IpAddress> addresses;
  for (const OwnedAddress& address : addresses_) addresses.push_back(address.address);
  return WaitUntilUsable(std::move(addresses));
}

absl::StatusOr<bool> LinkConfigurator::IsLocal(const IpAddress& address) {
  std::string action =
      absl::StrCat("looking up the route to ", address.ToString(), " on ", interface_name_);
  std::unique_ptr<nl_msg, MsgDeleter> msg(nlmsg_alloc_simple(RTM_GETROUTE, 0));
  if (msg == nullptr) return absl::ResourceExhaustedError(absl::StrCat(action, ": out of memory"));
  rtmsg request{};
  request.rtm_family = static_cast<unsigned char>(Family(address));
  request.rtm_dst_len = static_cast<unsigned char>(address.bit_length());
  if (int rc = nlmsg_append(msg.get(), &request, sizeof(request), NLMSG_ALIGNTO); rc < 0) {
    return Failure(action, rc);
  }
  if (int rc = nla_put(msg.get(), RTA_DST, address.byte_length(), address.bytes()); rc < 0) {
    return Failure(action, rc);
  }
  *kernel_error_ = {};
  if (int rc = nl_send_auto(socket_.get(), msg.get()); rc < 0) return Failure(action, rc);
  nl_cb* base = nl_socket_get_cb(socket_.get());
  std::unique_ptr<nl_cb, CbDeleter> callbacks(nl_cb_clone(base));
  nl_cb_put(base);
  if (callbacks == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(action, ": out of memory"));
  }
  RouteAnswer answer;
  nl_cb_set(callbacks.get(), NL_CB_VALID, NL_CB_CUSTOM, &RecordRouteType, &answer);
  nl_cb_set(callbacks.get(), NL_CB_ACK, NL_CB_CUSTOM, &RecordAck, &answer);
  while (!answer.acked) {
    // An error (e.g. no route at all) arrives instead of the ACK and ends the exchange too.
    if (int rc = nl_recvmsgs(socket_.get(), callbacks.get()); rc < 0) {
      int error = kernel_error_->error;
      if (error == ENETUNREACH || error == EHOSTUNREACH) return false;
      return Failure(action, rc);
    }
  }
  return answer.type == RTN_LOCAL;
}

absl::Status LinkConfigurator::WaitUntilUsable(std::vector<IpAddress> addresses) {
  // Subscribe before the first check, so no change between check and wait goes unnoticed.
  RouteEvents events;
  const auto deadline = std::chrono::steady_clock::now() + kAddressReadyTimeout;
  while (true) {
    std::vector<IpAddress> pending;
    for (const IpAddress& address : addresses) {
      absl::StatusOr<bool> local = IsLocal(address);
      if (!local.ok()) return local.status();
      if (!*local) pending.push_back(address);
    }
    if (pending.empty()) return absl::OkStatus();
    addresses = std::move(pending);
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "address ", addresses.front().ToString(), " on ", interface_name_,
          " does not accept packets ", kAddressReadyTimeout.count(),
          " ms after the link came up (the kernel has not installed its local route; for IPv6 "
          "check sysctl net.ipv6.conf.",
          interface_name_, ".disable_ipv6)"));
    }
    events.Wait(std::min(kAddressRecheckInterval,
                         std::chrono::ceil<std::chrono::milliseconds>(deadline - now)));
  }
}

absl::Status LinkConfigurator::AddAddress(const IpAddress& address, int prefix_length) {
  std::string action = absl::StrCat("adding address ", address.ToString(), "/", prefix_length,
                                    " to ", interface_name_);
  if (prefix_length < 0 || prefix_length > address.bit_length()) {
    return absl::InvalidArgumentError(
        absl::StrCat(action, ": prefix length must be 0-", address.bit_length()));
  }
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = ToNlAddr(address, prefix_length);
  if (addr == nullptr || local == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(action, ": out of memory"));
  }
  rtnl_addr_set_ifindex(addr.get(), interface_index_);
  rtnl_addr_set_family(addr.get(), Family(address));
  if (int rc = rtnl_addr_set_local(addr.get(), local.get()); rc < 0) return Failure(action, rc);
  rtnl_addr_set_prefixlen(addr.get(), prefix_length);
  // RFC 4862 section 5.4: DAD would hold the address "tentative" (unusable as a source) for about
  // a second; on a point-to-point tunnel there is no one to collide with.
  if (address.is_v6()) rtnl_addr_set_flags(addr.get(), IFA_F_NODAD);
  *kernel_error_ = {};
  int rc = rtnl_addr_add(socket_.get(), addr.get(), NLM_F_EXCL);
  bool existed = rc < 0 && kernel_error_->error == EEXIST;
  if (rc < 0 && !existed) return Failure(action, rc);
  if (existed) {
    TM_LOG_INFO("address already present, leaving it in place at teardown interface={} address={}",
                interface_name_, address.ToString());
  }
  bool known = false;
  for (const OwnedAddress& added : addresses_) {
    known = known || (added.address == address && added.prefix_length == prefix_length);
  }
  if (!known) addresses_.push_back({address, prefix_length, /*owned=*/!existed});
  return up_ ? WaitUntilUsable({address}) : absl::OkStatus();
}

absl::Status LinkConfigurator::DeleteAddress(const OwnedAddress& address) {
  std::string action = absl::StrCat("removing address ", address.address.ToString(), "/",
                                    address.prefix_length, " from ", interface_name_);
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = ToNlAddr(address.address, address.prefix_length);
  if (addr == nullptr || local == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(action, ": out of memory"));
  }
  rtnl_addr_set_ifindex(addr.get(), interface_index_);
  rtnl_addr_set_family(addr.get(), Family(address.address));
  if (int rc = rtnl_addr_set_local(addr.get(), local.get()); rc < 0) return Failure(action, rc);
  rtnl_addr_set_prefixlen(addr.get(), address.prefix_length);
  *kernel_error_ = {};
  if (int rc = rtnl_addr_delete(socket_.get(), addr.get(), 0); rc < 0) return Failure(action, rc);
  return absl::OkStatus();
}

namespace {

// The route `prefix dev <index> scope link proto static` in `table`.
absl::StatusOr<RoutePtr> BuildRoute(const Prefix& prefix, int interface_index, uint32_t table) {
  RoutePtr route(rtnl_route_alloc());
  NlAddrPtr destination = ToNlAddr(prefix.address(), prefix.length());
  rtnl_nexthop* nexthop = rtnl_route_nh_alloc();
  if (route == nullptr || destination == nullptr || nexthop == nullptr) {
    if (nexthop != nullptr) rtnl_route_nh_free(nexthop);
    return absl::ResourceExhaustedError("out of memory");
  }
  rtnl_route_set_family(route.get(), Family(prefix.address()));
  rtnl_route_set_table(route.get(), table);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), RT_SCOPE_LINK);
  if (int rc = rtnl_route_set_dst(route.get(), destination.get()); rc < 0) {
    rtnl_route_nh_free(nexthop);
    return absl::InternalError(nl_geterror(rc));
  }
  rtnl_route_nh_set_ifindex(nexthop, interface_index);
  rtnl_route_add_nexthop(route.get(), nexthop);  // The route owns the nexthop from here on.
  return route;
}

}  // namespace

absl::Status LinkConfigurator::AddRoute(const Prefix& prefix) {
  std::string action = absl::StrCat("adding route ", prefix.ToString(), " via ", interface_name_);
  absl::StatusOr<RoutePtr> route = BuildRoute(prefix, interface_index_, route_table_);
  if (!route.ok())
    return absl::Status(route.status().code(),
                        absl::StrCat(action, ": ", route.status().message()));
  *kernel_error_ = {};
  if (int rc = rtnl_route_add(socket_.get(), route->get(), NLM_F_EXCL); rc < 0) {
    absl::Status failure = Failure(action, rc);
    if (failure.code() == absl::StatusCode::kAlreadyExists) {
      const std::string table = route_table_ == RT_TABLE_MAIN
                                    ? std::string("the main table")
                                    : absl::StrCat("table ", route_table_);
      const std::string show =
          route_table_ == RT_TABLE_MAIN ? "" : absl::StrCat(" table ", route_table_);
      return absl::AlreadyExistsError(
          absl::StrCat(failure.message(), " (another route to ", prefix.ToString(), " is in ",
                       table, ": see \"ip route show ", prefix.ToString(), show, "\")"));
    }
    return failure;
  }
  return absl::OkStatus();
}

absl::Status LinkConfigurator::DeleteRoute(const Prefix& prefix) {
  std::string action = absl::StrCat("removing route ", prefix.ToString(), " via ", interface_name_);
  absl::StatusOr<RoutePtr> route = BuildRoute(prefix, interface_index_, route_table_);
  if (!route.ok())
    return absl::Status(route.status().code(),
                        absl::StrCat(action, ": ", route.status().message()));
  *kernel_error_ = {};
  if (int rc = rtnl_route_delete(socket_.get(), route->get(), 0); rc < 0) {
    return Failure(action, rc);
  }
  return absl::OkStatus();
}

bool LinkConfigurator::IsConnectedSubnet(const Prefix& prefix) const {
  for (const OwnedAddress& address : addresses_) {
    if (Prefix(address.address, address.prefix_length) == prefix) return true;
  }
  return false;
}

absl::Status LinkConfigurator::ReplaceRoutes(absl::Span<const Prefix> prefixes) {
  absl::flat_hash_set<std::string> wanted;
  std::vector<Prefix> to_add;
  absl::flat_hash_set<std::string> installed;
  for (const Prefix& route : routes_) installed.insert(PrefixKey(route));
  for (const Prefix& prefix : prefixes) {
    if (IsConnectedSubnet(prefix)) continue;
    std::string key = PrefixKey(prefix);
    if (!wanted.insert(key).second) continue;
    if (!installed.contains(key)) to_add.push_back(prefix);
  }
  // Make before break: traffic to a prefix that stays never loses its route.
  for (const Prefix& prefix : to_add) {
    if (absl::Status added = AddRoute(prefix); !added.ok()) return added;
    routes_.push_back(prefix);
  }
  std::vector<Prefix> kept;
  absl::Status result;
  for (const Prefix& route : routes_) {
    if (wanted.contains(PrefixKey(route))) {
      kept.push_back(route);
      continue;
    }
    if (!result.ok()) {  // After a failure, keep the rest listed for a later retry.
      kept.push_back(route);
      continue;
    }
    if (absl::Status removed = DeleteRoute(route); !removed.ok() && !IsGone(removed)) {
      result = removed;
      kept.push_back(route);
    }
  }
  routes_ = std::move(kept);
  return result;
}

absl::Status LinkConfigurator::Teardown() {
  absl::Status result;
  std::vector<Prefix> remaining_routes;
  for (const Prefix& route : routes_) {
    absl::Status removed = DeleteRoute(route);
    if (removed.ok() || IsGone(removed)) continue;
    remaining_routes.push_back(route);
    result.Update(removed);
  }
  routes_ = std::move(remaining_routes);

  std::vector<OwnedAddress> remaining_addresses;
  for (const OwnedAddress& address : addresses_) {
    if (!address.owned) continue;
    absl::Status removed = DeleteAddress(address);
    if (removed.ok() || IsGone(removed)) continue;
    remaining_addresses.push_back(address);
    result.Update(removed);
  }
  addresses_ = std::move(remaining_addresses);
  return result;
}

}  // namespace tunnelmesh
