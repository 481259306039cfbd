#include "node-agent/exit/exit_kernel.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "node-agent/exit/testing/recording_runner.h"

namespace tunnelmesh {
namespace {

Prefix P(const char* text) { return *Prefix::Parse(text); }
IpAddress A(const char* text) { return *IpAddress::Parse(text); }

class ExitKernelTest : public ::testing::Test {
 protected:
  std::string scratch_ =
      (std::filesystem::temp_directory_path() / ("exit_kernel_test." + std::to_string(getpid())))
          .string();
  RecordingRunner runner_;
};

TEST(ExitKernelIds, StableAndDistinctPerInterface) {
  const ExitKernelIds a = ExitKernelIdsFor("tm0");
  EXPECT_EQ(a.table, ExitKernelIdsFor("tm0").table);
  EXPECT_EQ(a.table, a.fwmark);
  EXPECT_GE(a.priority, 20000u);
  EXPECT_LT(a.priority + 3, 32766u);
  EXPECT_NE(a.table, ExitKernelIdsFor("tm1").table);
  EXPECT_NE(a.priority, ExitKernelIdsFor("tm1").priority);
  EXPECT_EQ(ExitTableName("wg-home.1"), "tunnelmesh_exit_wg_home_1");
}

TEST(ClientRuleSpecs, BypassLanAndCatchAllInOrder) {
  ClientRoutes routes;
  routes.route_all = true;
  routes.bypass = {A("192.0.2.1"), A("2001:db8::1"), A("198.51.100.7")};
  routes.lan = {P("192.168.1.0/24")};
  const ExitKernelIds ids{100, 100, 20000};
  EXPECT_EQ(ClientRuleSpecs(routes, ids, IpAddress::Family::kV4),
            (std::vector<std::string>{
                "to 192.0.2.1/32 lookup main priority 20000",
                "to 198.51.100.7/32 lookup main priority 20000",
                "to 192.168.1.0/24 ipproto udp dport 53 lookup 100 priority 20001",
                "to 192.168.1.0/24 ipproto tcp dport 53 lookup 100 priority 20001",
                "to 192.168.1.0/24 lookup main priority 20002",
                "not fwmark 0x64 lookup 100 priority 20003",
            }));
  EXPECT_EQ(ClientRuleSpecs(routes, ids, IpAddress::Family::kV6),
            (std::vector<std::string>{
                "to 2001:db8::1/128 lookup main priority 20000",
                "not fwmark 0x64 lookup 100 priority 20003",
            }));
  routes.route_all = false;
  EXPECT_TRUE(ClientRuleSpecs(routes, ids, IpAddress::Family::kV4).empty());
}

TEST(ClientDnsScript, RedirectsEveryQueryButLoopbackAndMesh) {
  ClientRoutes routes;
  routes.route_all = true;
  EXPECT_EQ(ClientDnsScript("tm0", routes), "");
  routes.dns = A("203.0.113.53");
  routes.mesh_cidrs = {P("10.99.0.0/16"), P("fd99:99::/48")};
  const std::string script = ClientDnsScript("tm0", routes);
  EXPECT_TRUE(absl::StrContains(script, "table inet tunnelmesh_exitdns_tm0"));
  EXPECT_TRUE(absl::StrContains(script, "ip daddr { 127.0.0.0/8, 10.99.0.0/16 } return"));
  EXPECT_TRUE(absl::StrContains(script, "ip6 daddr { ::1/128, fd99:99::/48 } return"));
  EXPECT_TRUE(absl::StrContains(script, "udp dport 53 counter dnat ip to 203.0.113.53:53"));
  EXPECT_TRUE(absl::StrContains(script, "tcp dport 53 counter dnat ip to 203.0.113.53:53"));
  routes.dns = A("2001:db8::53");
  EXPECT_TRUE(
      absl::StrContains(ClientDnsScript("tm0", routes),
                        "meta nfproto ipv6 udp dport 53 counter dnat ip6 to [2001:db8::53]:53"));
}

TEST(ExitForwardScript, AcceptsAndMasqueradesOnlyClients) {
  const std::string script = ExitForwardScript("tm0", {P("10.99.0.5/32"), P("fd99:99::5/128")},
                                               {P("10.99.0.0/16"), P("fd99:99::/48")});
  // Replaced atomically: the old table goes in the same transaction.
  EXPECT_TRUE(absl::StartsWith(
      script, "table inet tunnelmesh_exit_tm0 {}\ndelete table inet tunnelmesh_exit_tm0\n"));
  EXPECT_TRUE(absl::StrContains(script, "elements = { 10.99.0.5/32 }"));
  EXPECT_TRUE(absl::StrContains(script, "elements = { fd99:99::5/128 }"));
  EXPECT_TRUE(absl::StrContains(script, "iifname \"tm0\" ip saddr @clients4 counter accept"));
  EXPECT_TRUE(absl::StrContains(script, "iifname \"tm0\" counter drop"));
  EXPECT_LT(script.find("iifname \"tm0\" oifname \"tm0\" accept"),
            script.find("iifname \"tm0\" counter drop"));
  EXPECT_TRUE(absl::StrContains(
      script, "oifname != \"tm0\" ip saddr @clients4 ip daddr != @mesh4 masquerade"));
  EXPECT_TRUE(absl::StrContains(
      script, "oifname != \"tm0\" ip6 saddr @clients6 ip6 daddr != @mesh6 masquerade"));
  // An IPv4-only mesh: the IPv6 sets stay empty (no `elements` line, which nft would refuse).
  const std::string v4 = ExitForwardScript("tm0", {P("10.99.0.5/32")}, {P("10.99.0.0/16")});
  EXPECT_EQ(v4.find("elements = {  }"), std::string::npos);
}

TEST_F(ExitKernelTest, ApplyAddsBeforeDeletingAndOnlyWhatChanged) {
  ExitClientKernel kernel("tm0", &runner_, scratch_);
  const ExitKernelIds ids = kernel.ids();
  ClientRoutes routes;
  routes.route_all = true;
  routes.bypass = {A("192.0.2.1")};
  ASSERT_TRUE(kernel.Apply(routes).ok());
  const std::string table = std::to_string(ids.table);
  const std::string first = runner_.All();
  EXPECT_TRUE(absl::StrContains(first, "route replace default dev tm0 table " + table));
  EXPECT_TRUE(absl::StrContains(first, "route replace unreachable default table " + table));
  EXPECT_TRUE(absl::StrContains(first, "rule add to 192.0.2.1/32 lookup main"));
  EXPECT_TRUE(absl::StrContains(first, "rule add not fwmark"));
  // The table's routes come before the rule that sends traffic into it.
  EXPECT_LT(first.find("route replace default"), first.find("rule add not fwmark"));

  runner_.commands.clear();
  ASSERT_TRUE(kernel.Apply(routes).ok());
  EXPECT_TRUE(runner_.commands.empty()) << runner_.All();

  routes.bypass = {A("192.0.2.2")};
  ASSERT_TRUE(kernel.Apply(routes).ok());
  ASSERT_EQ(runner_.commands.size(), 2u) << runner_.All();
  EXPECT_TRUE(absl::StrContains(runner_.commands[0], "rule add to 192.0.2.2/32"));
  EXPECT_TRUE(absl::StrContains(runner_.commands[1], "rule del to 192.0.2.1/32"));

  runner_.commands.clear();
  ASSERT_TRUE(kernel.Remove().ok());
  const std::string removed = runner_.All();
  EXPECT_TRUE(absl::StrContains(removed, "rule del not fwmark"));
  EXPECT_TRUE(absl::StrContains(removed, "route flush table " + table));
}

TEST_F(ExitKernelTest, ApplyFailureNamesTheCommand) {
  ExitClientKernel kernel("tm0", &runner_, scratch_);
  runner_.fail_on = "rule add";
  ClientRoutes routes;
  routes.route_all = true;
  absl::Status s = kernel.Apply(routes);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "exit routing on tm0"));
  EXPECT_TRUE(absl::StrContains(s.message(), "Operation not permitted"));
}

TEST_F(ExitKernelTest, PurgeStaleDeletesRulesAtItsPrioritiesOnly) {
  ExitClientKernel kernel("tm0", &runner_, scratch_);
  const std::string p = std::to_string(kernel.ids().priority);
  const std::string p3 = std::to_string(kernel.ids().priority + 3);
  runner_.rule_show = "0:\tfrom all lookup local\n" + p + ":\tfrom all to 192.0.2.1 lookup main\n" +
                      p + ":\tfrom all to 192.0.2.9 lookup main\n" + p3 +
                      ":\tnot from all fwmark 0x1 lookup 7\n32766:\tfrom all lookup main\n";
  ASSERT_TRUE(kernel.PurgeStale().ok());
  const std::string all = runner_.All();
  size_t deletes = 0;
  for (size_t at = all.find("rule del priority"); at != std::string::npos;
       at = all.find("rule del priority", at + 1)) {
    ++deletes;
  }
  EXPECT_EQ(deletes, 6u) << all;  // Three per family (the fake answers both the same).
  EXPECT_FALSE(absl::StrContains(all, "rule del priority 32766"));
  EXPECT_TRUE(absl::StrContains(all, "delete table inet tunnelmesh_exitdns_tm0"));
}

TEST_F(ExitKernelTest, ForwarderTurnsForwardingOnAndRestoresIt) {
  const std::string root = scratch_ + ".sys";
  std::filesystem::create_directories(root + "/net/ipv4");
  std::filesystem::create_directories(root + "/net/ipv6/conf/all");
  std::ofstream(root + "/net/ipv4/ip_forward") << "0\n";
  std::ofstream(root + "/net/ipv6/conf/all/forwarding") << "0\n";
  auto read = [&](const std::string& key) {
    std::ifstream in(root + "/" + key);
    std::string v;
    in >> v;
    return v;
  };
  ExitForwarder forwarder("tm0", &runner_, scratch_, root);
  ASSERT_TRUE(forwarder.Apply({P("10.99.0.5/32")}, {P("10.99.0.0/16")}).ok());
  EXPECT_TRUE(forwarder.active());
  EXPECT_EQ(read("net/ipv4/ip_forward"), "1");
  EXPECT_EQ(read("net/ipv6/conf/all/forwarding"), "0");  // No IPv6 client.
  EXPECT_TRUE(absl::StrContains(runner_.All(), "nft -f"));
  runner_.commands.clear();
  ASSERT_TRUE(forwarder.Apply({P("10.99.0.5/32")}, {P("10.99.0.0/16")}).ok());
  EXPECT_TRUE(runner_.commands.empty());
  ASSERT_TRUE(forwarder.Apply({}, {P("10.99.0.0/16")}).ok());
  EXPECT_FALSE(forwarder.active());
  EXPECT_TRUE(absl::StrContains(runner_.All(), "delete table inet tunnelmesh_exit_tm0"));
  EXPECT_EQ(read("net/ipv4/ip_forward"), "0");
  // A run that crashed with forwarding on: the next one's PurgeStale turns it off again.
  {
    ExitForwarder crashed("tm0", &runner_, scratch_, root);
    ASSERT_TRUE(crashed.Apply({P("10.99.0.5/32")}, {P("10.99.0.0/16")}).ok());
    EXPECT_EQ(read("net/ipv4/ip_forward"), "1");
  }
  ExitForwarder next("tm0", &runner_, scratch_, root);
  ASSERT_TRUE(next.PurgeStale().ok());
  EXPECT_EQ(read("net/ipv4/ip_forward"), "0");
  // Forwarding that was on before the agent is left on.
  std::ofstream(root + "/net/ipv4/ip_forward") << "1\n";
  ASSERT_TRUE(next.Apply({P("10.99.0.5/32")}, {P("10.99.0.0/16")}).ok());
  ASSERT_TRUE(next.Remove().ok());
  EXPECT_EQ(read("net/ipv4/ip_forward"), "1");
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace tunnelmesh
