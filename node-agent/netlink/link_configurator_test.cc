// Runs LinkConfigurator against the real kernel: each test enters a fresh network namespace,
// creates real TUN devices and checks the result with iproute2 (`ip -j`), an implementation
// independent of libnl.
#include "node-agent/netlink/link_configurator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "node-agent/tun/linux_tun_device.h"
#include "node-agent/tun/testing/network_namespace.h"

namespace tunnelmesh {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;
using Json = nlohmann::json;

IpAddress Ip(const std::string& text) { return IpAddress::Parse(text).value(); }
Prefix Pfx(const std::string& text) { return Prefix::Parse(text).value(); }

// Runs `ip -j <args>` in this thread's namespace and parses its output.
Json IpJson(const std::string& args) {
  std::string command = absl::StrCat("ip -j ", args, " 2>&1");
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen " << command;
    return Json();
  }
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  int status = pclose(pipe);
  EXPECT_EQ(status, 0) << command << ": " << output;
  if (output.find_first_not_of(" \n") == std::string::npos) return Json::array();
  Json parsed = Json::parse(output, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << command << ": " << output;
  return parsed;
}

// "10.0.0.1/24" for each address on `device` (any family), skipping IPv6 link-local ones the
// kernel adds by itself.
std::set<std::string> Addresses(const std::string& device) {
  std::set<std::string> result;
  for (const Json& link : IpJson("address show dev " + device)) {
    for (const Json& info : link.value("addr_info", Json::array())) {
      std::string local = info.value("local", "");
      if (local.rfind("fe80:", 0) == 0) continue;
      result.insert(absl::StrCat(local, "/", info.value("prefixlen", -1)));
    }
  }
  return result;
}

Json AddressInfo(const std::string& device, const std::string& local) {
  for (const Json& link : IpJson("address show dev " + device)) {
    for (const Json& info : link.value("addr_info", Json::array())) {
      if (info.value("local", "") == local) return info;
    }
  }
  return Json();
}

struct Route {
  std::string destination;
  std::string protocol;
  std::string scope;
  friend bool operator<(const Route& a, const Route& b) { return a.destination < b.destination; }
  friend bool operator==(const Route& a, const Route& b) {
    return a.destination == b.destination && a.protocol == b.protocol && a.scope == b.scope;
  }
  friend std::ostream& operator<<(std::ostream& out, const Route& r) {
    return out << r.destination << " proto " << r.protocol << " scope " << r.scope;
  }
};

// Routes of `table` (main by default) through `device` of both families, kernel ones (connected
// subnets) included and IPv6 link-local/multicast ones left out. Host routes are printed with
// their length.
std::set<Route> Routes(const std::string& device, const std::string& table = "main") {
  std::set<Route> result;
  for (const char* family : {"-4", "-6"}) {
    for (const Json& entry :
         IpJson(absl::StrCat(family, " route show table ", table, " dev ", device))) {
      std::string destination = entry.value("dst", "");
      if (destination.rfind("fe80:", 0) == 0 || destination.rfind("ff00:", 0) == 0) continue;
      if (destination.find('/') == std::string::npos) {
        absl::StrAppend(&destination, family[1] == '4' ? "/32" : "/128");
      }
      // iproute2 omits "scope" for IPv6 routes (the kernel has no IPv6 route scope).
      result.insert({destination, entry.value("protocol", ""), entry.value("scope", "")});
    }
  }
  return result;
}

Route Static(std::string destination, bool v6 = false) {
  return {std::move(destination), "static", v6 ? "" : "link"};
}
Route Kernel(std::string destination, bool v6 = false) {
  return {std::move(destination), "kernel", v6 ? "" : "link"};
}

class LinkConfiguratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status entered = EnterNewNetworkNamespace();
    if (entered.code() == absl::StatusCode::kPermissionDenied) GTEST_SKIP() << entered;
    ASSERT_TRUE(entered.ok()) << entered;
    if (system("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("tm0");
    ASSERT_TRUE(tun.ok()) << tun.status();
    tun_ = std::move(*tun);
  }

  // MTU 1400, 10.7.0.1/24 and fd07::1/64, up.
  std::unique_ptr<LinkConfigurator> ConfigureTm0() {
    absl::StatusOr<std::unique_ptr<LinkConfigurator>> link = LinkConfigurator::Create("tm0");
    EXPECT_TRUE(link.ok()) << link.status();
    if (!link.ok()) return nullptr;
    EXPECT_TRUE((*link)->SetMtu(1400).ok());
    EXPECT_TRUE((*link)->AddAddress(Ip("10.7.0.1"), 24).ok());
    EXPECT_TRUE((*link)->AddAddress(Ip("fd07::1"), 64).ok());
    EXPECT_TRUE((*link)->SetUp().ok());
    return std::move(*link);
  }

  std::unique_ptr<LinuxTunDevice> tun_;
};

TEST_F(LinkConfiguratorTest, ConfiguresTheLinkAndTearsDownWhatItAdded) {
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> created = LinkConfigurator::Create("tm0");
  ASSERT_TRUE(created.ok()) << created.status();
  LinkConfigurator& link = **created;
  EXPECT_EQ(link.interface_name(), "tm0");
  EXPECT_GT(link.interface_index(), 0);

  ASSERT_TRUE(link.SetMtu(1400).ok());
  // Host bits are kept: the interface is 10.7.0.1 in 10.7.0.0/24.
  ASSERT_TRUE(link.AddAddress(Ip("10.7.0.1"), 24).ok());
  ASSERT_TRUE(link.AddAddress(Ip("fd07::1"), 64).ok());
  ASSERT_TRUE(link.SetUp().ok());
  std::vector<Prefix> allowed_ips = {Pfx("10.8.0.0/16"), Pfx("fd08::/64"), Pfx("192.168.9.9/32"),
                                     Pfx("10.7.0.0/24"),   // the connected subnet: skipped
                                     Pfx("10.8.0.0/16")};  // a duplicate: ignored
  absl::Status routed = link.ReplaceRoutes(allowed_ips);
  ASSERT_TRUE(routed.ok()) << routed;
  EXPECT_THAT(link.installed_routes(),
              ElementsAre(Pfx("10.8.0.0/16"), Pfx("fd08::/64"), Pfx("192.168.9.9/32")));

  Json device = IpJson("link show dev tm0");
  ASSERT_EQ(device.size(), 1u);
  EXPECT_EQ(device[0].value("mtu", 0), 1400);
  EXPECT_THAT(device[0]["flags"].get<std::vector<std::string>>(), Contains("UP"));
  EXPECT_THAT(Addresses("tm0"), UnorderedElementsAre("10.7.0.1/24", "fd07::1/64"));
  Json v6 = AddressInfo("tm0", "fd07::1");
  EXPECT_TRUE(v6.value("nodad", false)) << v6.dump();
  EXPECT_FALSE(v6.value("tentative", false)) << v6.dump();
  EXPECT_THAT(Routes("tm0"), UnorderedElementsAre(Kernel("10.7.0.0/24"), Kernel("fd07::/64", true),
                                                  Static("10.8.0.0/16"), Static("fd08::/64", true),
                                                  Static("192.168.9.9/32")));

  absl::Status torn_down = link.Teardown();
  ASSERT_TRUE(torn_down.ok()) << torn_down;
  EXPECT_THAT(link.installed_routes(), IsEmpty());
  EXPECT_THAT(Addresses("tm0"), IsEmpty());
  EXPECT_THAT(Routes("tm0"), IsEmpty());
  // The link itself stays: it belongs to the TUN device.
  EXPECT_EQ(IpJson("link show dev tm0").size(), 1u);
  // Teardown is idempotent.
  EXPECT_TRUE(link.Teardown().ok());
}

TEST_F(LinkConfiguratorTest, ReplaceRoutesAddsNewAndRemovesGone) {
  std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
  ASSERT_NE(link, nullptr);
  ASSERT_TRUE(link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("fd08::/64"), Pfx("10.9.0.0/16")}).ok());
  absl::Status replaced =
      link->ReplaceRoutes({Pfx("10.9.0.0/16"), Pfx("172.16.0.0/12"), Pfx("fd09::/48")});
  ASSERT_TRUE(replaced.ok()) << replaced;
  EXPECT_THAT(link->installed_routes(),
              ElementsAre(Pfx("10.9.0.0/16"), Pfx("172.16.0.0/12"), Pfx("fd09::/48")));
  EXPECT_THAT(Routes("tm0"), UnorderedElementsAre(Kernel("10.7.0.0/24"), Kernel("fd07::/64", true),
                                                  Static("10.9.0.0/16"), Static("172.16.0.0/12"),
                                                  Static("fd09::/48", true)));

  ASSERT_TRUE(link->ReplaceRoutes({}).ok());
  EXPECT_THAT(link->installed_routes(), IsEmpty());
  EXPECT_THAT(Routes("tm0"),
              UnorderedElementsAre(Kernel("10.7.0.0/24"), Kernel("fd07::/64", true)));
}

// wg-quick's `Table = 1234`.
TEST_F(LinkConfiguratorTest, RoutesGoIntoTheChosenTable) {
  std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
  ASSERT_NE(link, nullptr);
  link->SetRouteTable(1234);
  ASSERT_TRUE(link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("fd08::/64")}).ok());
  EXPECT_THAT(Routes("tm0", "1234"),
              UnorderedElementsAre(Static("10.8.0.0/16"), Static("fd08::/64", true)));
  EXPECT_THAT(Routes("tm0"),
              UnorderedElementsAre(Kernel("10.7.0.0/24"), Kernel("fd07::/64", true)));
  ASSERT_TRUE(link->Teardown().ok());
  EXPECT_THAT(Routes("tm0", "1234"), IsEmpty());
}

TEST_F(LinkConfiguratorTest, DestructionRemovesWhatItAdded) {
  {
    std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
    ASSERT_NE(link, nullptr);
    ASSERT_TRUE(link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("fd08::/64")}).ok());
    EXPECT_EQ(Routes("tm0").size(), 4u);
  }
  EXPECT_THAT(Addresses("tm0"), IsEmpty());
  EXPECT_THAT(Routes("tm0"), IsEmpty());
}

TEST_F(LinkConfiguratorTest, TeardownAfterTheDeviceIsGoneSucceeds) {
  std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
  ASSERT_NE(link, nullptr);
  ASSERT_TRUE(link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("fd08::/64")}).ok());
  tun_.reset();  // The kernel deletes the interface with its addresses and routes.
  absl::Status torn_down = link->Teardown();
  EXPECT_TRUE(torn_down.ok()) << torn_down;
  EXPECT_THAT(link->installed_routes(), IsEmpty());
}

TEST_F(LinkConfiguratorTest, MissingInterfaceIsNotFound) {
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link = LinkConfigurator::Create("tm-absent");
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(link.status().message()),
            "interface tm-absent does not exist in this network namespace (create the TUN device "
            "first)");
}

TEST_F(LinkConfiguratorTest, ConflictingRouteIsAlreadyExistsAndNamesTheRoute) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> other = LinuxTunDevice::Create("tm1");
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> other_link = LinkConfigurator::Create("tm1");
  ASSERT_TRUE(other_link.ok()) << other_link.status();
  ASSERT_TRUE((*other_link)->SetUp().ok());
  ASSERT_TRUE((*other_link)->ReplaceRoutes({Pfx("10.60.0.0/16"), Pfx("fd60::/64")}).ok());

  std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
  ASSERT_NE(link, nullptr);
  absl::Status routed = link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("10.60.0.0/16")});
  EXPECT_EQ(routed.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(std::string(routed.message()),
            "adding route 10.60.0.0/16 via tm0: File exists (another route to 10.60.0.0/16 is "
            "in the main table: see \"ip route show 10.60.0.0/16\")");
  // What did get installed is still tracked, and removed at teardown.
  EXPECT_THAT(link->installed_routes(), ElementsAre(Pfx("10.8.0.0/16")));
  ASSERT_TRUE(link->Teardown().ok());
  EXPECT_THAT(Routes("tm1"),
              UnorderedElementsAre(Static("10.60.0.0/16"), Static("fd60::/64", true)));
}

TEST_F(LinkConfiguratorTest, RouteOnADownLinkGivesTheKernelsReason) {
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link = LinkConfigurator::Create("tm0");
  ASSERT_TRUE(link.ok()) << link.status();
  absl::Status routed = (*link)->ReplaceRoutes({Pfx("10.8.0.0/16")});
  EXPECT_EQ(routed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(routed.message()),
              StartsWith("adding route 10.8.0.0/16 via tm0: Network is down"));
  EXPECT_THAT((*link)->installed_routes(), IsEmpty());
}

TEST_F(LinkConfiguratorTest, BadMtuIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link = LinkConfigurator::Create("tm0");
  ASSERT_TRUE(link.ok()) << link.status();
  absl::Status set = (*link)->SetMtu(70000);
  EXPECT_EQ(set.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(set.message()),
              StartsWith("setting MTU of tm0 to 70000: Invalid argument"));
  EXPECT_EQ((*link)->SetMtu(0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LinkConfiguratorTest, PreexistingAddressIsAcceptedButLeftInPlace) {
  std::unique_ptr<LinkConfigurator> first = ConfigureTm0();
  ASSERT_NE(first, nullptr);
  {
    absl::StatusOr<std::unique_ptr<LinkConfigurator>> second = LinkConfigurator::Create("tm0");
    ASSERT_TRUE(second.ok()) << second.status();
    ASSERT_TRUE((*second)->AddAddress(Ip("10.7.0.1"), 24).ok());
    ASSERT_TRUE((*second)->AddAddress(Ip("10.7.0.2"), 24).ok());
  }
  // The second configurator removed only the address it created.
  EXPECT_THAT(Addresses("tm0"), UnorderedElementsAre("10.7.0.1/24", "fd07::1/64"));
}

TEST_F(LinkConfiguratorTest, AddressOnALinkWithIpv6DisabledGivesTheKernelsReason) {
  std::FILE* sysctl = std::fopen("/proc/sys/net/ipv6/conf/tm0/disable_ipv6", "w");
  ASSERT_NE(sysctl, nullptr) << std::strerror(errno);
  std::fputs("1\n", sysctl);
  ASSERT_EQ(std::fclose(sysctl), 0);
  absl::StatusOr<std::unique_ptr<LinkConfigurator>> link = LinkConfigurator::Create("tm0");
  ASSERT_TRUE(link.ok()) << link.status();
  absl::Status added = (*link)->AddAddress(Ip("fd07::1"), 64);
  EXPECT_EQ(added.code(), absl::StatusCode::kFailedPrecondition);
  // The extended-ack text varies a little between kernels ("ipv6: " prefix or not).
  EXPECT_THAT(std::string(added.message()),
              StartsWith("adding address fd07::1/64 to tm0: Permission denied (kernel: "));
  EXPECT_THAT(std::string(added.message()), HasSubstr("IPv6 is disabled on this device)"));
}

// --- Packets through the configured TUN device ---

uint16_t Checksum(const uint8_t* data, size_t size, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < size; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (size % 2) sum += data[size - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void Put16(std::vector<uint8_t>& out, size_t at, uint16_t value) {
  out[at] = static_cast<uint8_t>(value >> 8);
  out[at + 1] = static_cast<uint8_t>(value);
}

// An IPv4 or IPv6 UDP packet from `source`:`source_port` to `destination`:`destination_port`.
std::vector<uint8_t> UdpPacket(const IpAddress& source, uint16_t source_port,
                               const IpAddress& destination, uint16_t destination_port,
                               std::string_view payload) {
  const size_t header = source.is_v4() ? 20 : 40;
  const size_t udp_length = 8 + payload.size();
  std::vector<uint8_t> packet(header + udp_length);
  const int n = source.byte_length();
  if (source.is_v4()) {
    packet[0] = 0x45;
    Put16(packet, 2, static_cast<uint16_t>(packet.size()));
    packet[8] = 64;  // TTL
    packet[9] = 17;  // UDP
    std::memcpy(&packet[12], source.bytes(), n);
    std::memcpy(&packet[16], destination.bytes(), n);
    Put16(packet, 10, Checksum(packet.data(), 20));
  } else {
    packet[0] = 0x60;
    Put16(packet, 4, static_cast<uint16_t>(udp_length));
    packet[6] = 17;  // UDP
    packet[7] = 64;  // hop limit
    std::memcpy(&packet[8], source.bytes(), n);
    std::memcpy(&packet[24], destination.bytes(), n);
  }
  Put16(packet, header, source_port);
  Put16(packet, header + 2, destination_port);
  Put16(packet, header + 4, static_cast<uint16_t>(udp_length));
  std::memcpy(&packet[header + 8], payload.data(), payload.size());
  // UDP checksum over the pseudo-header (RFC 768, RFC 8200 section 8.1); mandatory for IPv6.
  uint32_t pseudo = 17 + static_cast<uint32_t>(udp_length);
  for (int i = 0; i < n; i += 2) {
    pseudo += (source.bytes()[i] << 8) | source.bytes()[i + 1];
    pseudo += (destination.bytes()[i] << 8) | destination.bytes()[i + 1];
  }
  uint16_t sum = Checksum(&packet[header], udp_length, pseudo);
  Put16(packet, header + 6, sum == 0 ? 0xffff : sum);
  return packet;
}

// Reads from the TUN device until a UDP packet to `destination` arrives (the kernel also sends
// its own IPv6 chatter, e.g. router solicitations), or 5 seconds pass.
std::vector<uint8_t> ReadUdpTo(TunDevice& tun, const IpAddress& destination) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::vector<uint8_t> buffer(65536);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{tun.fd(), POLLIN, 0};
    if (poll(&p, 1, 100) != 1) continue;
    absl::StatusOr<size_t> n = tun.Read(absl::MakeSpan(buffer));
    if (!n.ok()) {
      ADD_FAILURE() << n.status();
      return {};
    }
    std::vector<uint8_t> packet(buffer.begin(), buffer.begin() + *n);
    if (destination.is_v4() && packet.size() >= 28 && (packet[0] >> 4) == 4 && packet[9] == 17 &&
        std::memcmp(&packet[16], destination.bytes(), 4) == 0) {
      return packet;
    }
    if (destination.is_v6() && packet.size() >= 48 && (packet[0] >> 4) == 6 && packet[6] == 17 &&
        std::memcmp(&packet[24], destination.bytes(), 16) == 0) {
      return packet;
    }
  }
  ADD_FAILURE() << "no UDP packet to " << destination.ToString() << " came out of the TUN device";
  return {};
}

std::string ReceiveWithin5Seconds(int socket_fd) {
  pollfd p{socket_fd, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return "<nothing>";
  char buffer[256];
  ssize_t n = recv(socket_fd, buffer, sizeof(buffer), 0);
  return n < 0 ? "<error>" : std::string(buffer, n);
}

TEST_F(LinkConfiguratorTest, PacketsFlowBetweenSocketsAndTheTunDevice) {
  std::unique_ptr<LinkConfigurator> link = ConfigureTm0();
  ASSERT_NE(link, nullptr);
  ASSERT_TRUE(link->ReplaceRoutes({Pfx("10.8.0.0/16"), Pfx("fd08::/64")}).ok());

  for (const char* local_text : {"10.7.0.1", "fd07::1"}) {
    SCOPED_TRACE(local_text);
    IpAddress local = Ip(local_text);
    IpAddress remote = Ip(local.is_v4() ? "10.8.0.5" : "fd08::5");
    Endpoint bound(local, 0);
    sockaddr_in6 address{};
    socklen_t length = bound.ToSockaddrV6(&address);
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    // Binding to fd07::1 right away only works because NODAD made it usable at once.
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0) << std::strerror(errno);
    ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
    uint16_t local_port = ntohs(address.sin6_port);

    // Out: socket -> kernel route via tm0 -> TUN read.
    sockaddr_in6 to{};
    socklen_t to_length = Endpoint(remote, 9999).ToSockaddrV6(&to);
    ASSERT_EQ(sendto(fd, "hello", 5, 0, reinterpret_cast<sockaddr*>(&to), to_length), 5)
        << std::strerror(errno);
    std::vector<uint8_t> out = ReadUdpTo(*tun_, remote);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(std::string(out.end() - 5, out.end()), "hello");

    // In: TUN write -> kernel -> socket.
    ASSERT_TRUE(tun_->Write(UdpPacket(remote, 9999, local, local_port, "world")).ok());
    EXPECT_EQ(ReceiveWithin5Seconds(fd), "world");
    close(fd);
  }
}

}  // namespace
}  // namespace tunnelmesh
