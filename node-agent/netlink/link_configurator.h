// LinkConfigurator: gives the agent's interface its MTU, addresses and routes over rtnetlink
// (libnl-route-3), and takes back exactly what it added. It replaces what wg-quick does with
// `ip link set`, `ip address add` and `ip route add`, without running any command.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/net/ip.h"

struct nl_sock;

namespace tunnelmesh {
namespace netlink_internal {
struct KernelError;
}  // namespace netlink_internal

// Configures one interface, found by name once at creation and then addressed by its index.
// Typical order: SetMtu, AddAddress (each), SetUp, ReplaceRoutes; ReplaceRoutes again whenever the
// peers' AllowedIPs change; Teardown (or destruction) at shutdown.
//
// Errors name the interface and the item, with the kernel's reason and, when the kernel gives one,
// its extended-ack text: `adding route fd00::/64 via tm0: File exists`. Codes: kAlreadyExists
// (a conflicting route/address), kPermissionDenied (no CAP_NET_ADMIN), kNotFound (interface gone),
// kFailedPrecondition (e.g. routes on a link that is down), kInvalidArgument (value refused).
//
// Not thread-safe: create, use and destroy it on the control thread.
class LinkConfigurator {
 public:
  // Opens a NETLINK_ROUTE socket in the calling thread's network namespace and looks up
  // `interface_name`. kNotFound when there is no such interface.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LinkConfigurator>> Create(
      std::string_view interface_name);

  // Teardown(); failures are logged.
  ~LinkConfigurator();
  LinkConfigurator(const LinkConfigurator&) = delete;
  LinkConfigurator& operator=(const LinkConfigurator&) = delete;

  // Sets the link MTU (not restored by Teardown).
  [[nodiscard]] absl::Status SetMtu(int mtu);

  // Adds `address`/`prefix_length` (the kernel adds the connected route). IPv6 addresses skip
  // duplicate address detection (IFA_F_NODAD): the tunnel has no neighbours to collide with. An
  // address that already exists is accepted but not owned: Teardown leaves it in place. When the
  // link is already up, returns once the address accepts packets (see SetUp).
  [[nodiscard]] absl::Status AddAddress(const IpAddress& address, int prefix_length);

  // Sets the link administratively up (not undone by Teardown), then waits until every address
  // added so far accepts packets: the kernel installs an IPv6 address's local route from a work
  // queue a moment after the link comes up, and drops packets to the address until then. The
  // wait is event-driven (rtnetlink notifications) and bounded by 2 s (kDeadlineExceeded).
  [[nodiscard]] absl::Status SetUp();

  // The routing table ReplaceRoutes uses from now on (default RT_TABLE_MAIN, 254): wg-quick's
  // `Table = N`. Call before the first ReplaceRoutes.
  void SetRouteTable(uint32_t table) { route_table_ = table; }

  // Makes the routes this object installed (the route table, main by default, `dev <interface>
  // scope link proto static`) equal to `prefixes`: adds the new ones first, then removes the ones
  // no longer listed. Duplicates are ignored, and so is a prefix equal to the subnet of an address
  // on this interface (its connected route already covers it). The link must be up (IPv4 refuses
  // routes on a down link). Stops at the first error; installed_routes() then still tells what is
  // in place.
  [[nodiscard]] absl::Status ReplaceRoutes(absl::Span<const Prefix> prefixes);

  // Removes the routes, then the addresses this object added. Idempotent; anything already gone
  // (e.g. the TUN device was closed first, which deletes both) counts as removed. On failure the
  // items that could not be removed stay listed, so a later call retries them.
  [[nodiscard]] absl::Status Teardown();

  const std::string& interface_name() const { return interface_name_; }
  int interface_index() const { return interface_index_; }
  // Routes currently installed by this object, in installation order.
  const std::vector<Prefix>& installed_routes() const { return routes_; }

 private:
  struct OwnedAddress {
    IpAddress address;
    int prefix_length;
    bool owned;  // false when it existed before AddAddress
  };
  struct SocketDeleter {
    void operator()(nl_sock* socket) const;
  };

  LinkConfigurator(std::unique_ptr<nl_sock, SocketDeleter> socket,
                   std::unique_ptr<netlink_internal::KernelError> kernel_error,
                   std::string interface_name, int interface_index);

  absl::Status ChangeLink(const std::string& action, int mtu, bool up);
  absl::Status AddRoute(const Prefix& prefix);
  absl::Status DeleteRoute(const Prefix& prefix);
  absl::Status DeleteAddress(const OwnedAddress& address);
  // Whether the kernel routes packets for `address` to this host (RTM_GETROUTE, as `ip route get`).
  absl::StatusOr<bool> IsLocal(const IpAddress& address);
  // Blocks until IsLocal() holds for each address, or the deadline passes.
  absl::Status WaitUntilUsable(std::vector<IpAddress> addresses);
  // Turns a negative libnl result into a Status for `action`, using kernel_error_.
  absl::Status Failure(const std::string& action, int nl_result) const;
  bool IsConnectedSubnet(const Prefix& prefix) const;

  std::unique_ptr<nl_sock, SocketDeleter> socket_;
  // What the kernel said about the last failed request (errno, extended-ack text), written by a
  // libnl callback. Heap-allocated so the pointer the callback holds stays valid.
  std::unique_ptr<netlink_internal::KernelError> kernel_error_;
  const std::string interface_name_;
  const int interface_index_;
  std::vector<OwnedAddress> addresses_;
  std::vector<Prefix> routes_;
  uint32_t route_table_ = 254;  // RT_TABLE_MAIN.
  // Set by a successful SetUp().
  bool up_ = false;
};

}  // namespace tunnelmesh
