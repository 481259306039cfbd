#include "node-agent/agent/agent_metrics.h"

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1'000'000);

nlohmann::json Peer(const std::string& name, const std::string& path, uint64_t rx_bytes) {
  return {{"name", name},         {"public_key", "key-of-" + name},
          {"path", path},         {"latest_handshake", 1'000'000 - 7},
          {"rx_bytes", rx_bytes}, {"tx_bytes", 2 * rx_bytes},
          {"rx_packets", 3},      {"tx_packets", 4},
          {"handshakes", 5},      {"handshake_failures", 1},
          {"path_changes", 2},    {"online", true}};
}

// What BuildAgentStatus makes for a joined agent with every optional part present.
nlohmann::json FullStatus() {
  nlohmann::json status;
  status["self"] = {{"name", "alpha"},
                    {"interface", "tm0"},
                    {"mesh", "demo"},
                    {"coordinator", {{"address", "c:7700"}, {"connected", true}}},
                    {"relay", "disconnected"}};
  nlohmann::json beta = Peer("beta", "direct", 100);
  beta["rtt_ms"] = 1.5;
  status["peers"] = {beta, Peer("gamma", "relay", 10)};
  status["drops"] = {{"no_route", 3}, {"decrypt_failed", 1}, {"cookie_sent", 2}};
  status["filter"] = {{"enabled", true},
                      {"policies", {{{"name", "web"}, {"allowed", 9}, {"denied", 0}}}},
                      {"default", {{"allowed", 0}, {"denied", 4}}},
                      {"drops", {{"policy_denied", 0}, {"default_denied", 4}}},
                      {"tracked_flows", 2},
                      {"rule_sets_applied", 1},
                      {"rule_sets_rejected", 0}};
  status["control_loop"] = {{"posts_dropped", 0}};
  status["attached_pods"] = {{{"name", "runner.ci.pod"}, {"detaching", false}},
                             {{"name", "db.ci.pod"}, {"detaching", false}},
                             {{"name", "old.ci.pod"}, {"detaching", true}}};
  status["pod_peers"] = 7;
  return status;
}

AgentMetricsExtras Extras() {
  AgentMetricsExtras extras;
  extras.version = "1.2.3";
  extras.dns_queries = {{"answered", 6}, {"nxdomain", 1}};
  extras.metrics_scrapes = 4;
  return extras;
}

TEST(AgentMetricsTest, PeersPathsRttAndCounters) {
  const std::string text = RenderAgentMetrics(FullStatus(), Extras(), kNow);
  EXPECT_THAT(text,
              HasSubstr("tunnelmesh_agent_info{interface=\"tm0\",name=\"alpha\",mesh=\"demo\","
                        "version=\"1.2.3\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_path{peer=\"beta\",path=\"direct\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_path{peer=\"gamma\",path=\"relay\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_rtt_seconds{peer=\"beta\"} 0.0015\n"));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_peer_rtt_seconds{peer=\"gamma\"}")));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_receive_bytes_total{peer=\"beta\"} 100\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_transmit_bytes_total{peer=\"gamma\"} 20\n"));
  EXPECT_THAT(text,
              HasSubstr("tunnelmesh_agent_peer_last_handshake_age_seconds{peer=\"beta\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_path_changes_total{peer=\"beta\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peers{path=\"direct\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peers{path=\"none\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peers{path=\"ssh\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_coordinator_connected 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_relay_connected 0\n"));
}

TEST(AgentMetricsTest, DropsOutcomesFilterAndDns) {
  const std::string text = RenderAgentMetrics(FullStatus(), Extras(), kNow);
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_drops_total{reason=\"no_route\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_drops_total{reason=\"decrypt_failed\"} 1\n"));
  // cookie_sent is an outcome, not a drop.
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_drops_total{reason=\"cookie_sent\"}")));
  EXPECT_THAT(text,
              HasSubstr("tunnelmesh_agent_handshake_outcomes_total{outcome=\"cookie_sent\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_filter_verdicts_total{policy=\"web\",verdict="
                              "\"allow\"} 9\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_filter_verdicts_total{policy=\"\",verdict="
                              "\"deny\"} 4\n"));
  EXPECT_THAT(text,
              HasSubstr("tunnelmesh_agent_filter_drops_total{reason=\"default_denied\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_dns_queries_total{outcome=\"answered\"} 6\n"));
}

TEST(AgentMetricsTest, PeersBeyondTheCapAreSummedUnderOther) {
  nlohmann::json status = FullStatus();
  status["peers"] = nlohmann::json::array();
  for (int i = 0; i < 5; ++i) {
    status["peers"].push_back(Peer("p" + std::to_string(i), "relay", 10 + i));
  }
  const std::string text = RenderAgentMetrics(status, Extras(), kNow, /*max_peer_series=*/3);
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_receive_bytes_total{peer=\"p2\"} 12\n"));
  EXPECT_THAT(text, Not(HasSubstr("{peer=\"p3\"}")));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peer_receive_bytes_total{peer=\"_other\"} 27\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_peers{path=\"relay\"} 5\n"));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_peer_path{peer=\"_other\"")));
}

TEST(AgentMetricsTest, ConfigModeStatusHasNoCoordinatorSeries) {
  nlohmann::json status = FullStatus();
  status["self"].erase("coordinator");
  status["self"].erase("relay");
  status.erase("filter");
  status.erase("attached_pods");
  const std::string text = RenderAgentMetrics(status, {}, kNow);
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_coordinator_connected")));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_relay_connected")));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_filter")));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_agent_attached_pods")));
}

TEST(AgentMetricsTest, AttachedPodsLeaveDetachingOnesOut) {
  nlohmann::json status = FullStatus();
  EXPECT_THAT(RenderAgentMetrics(status, Extras(), kNow),
              HasSubstr("\ntunnelmesh_agent_attached_pods 2\n"));
}

TEST(AgentMetricsTest, MalformedStatusRendersWithoutThrowing) {
  for (const char* doc : {"null", "[]", "{\"peers\": 3}", "{\"peers\": [1, {\"name\": 2}]}",
                          "{\"drops\": [], \"filter\": {\"policies\": {}}}"}) {
    const std::string text = RenderAgentMetrics(nlohmann::json::parse(doc), {}, kNow);
    EXPECT_THAT(text, HasSubstr("tunnelmesh_agent_info")) << doc;
  }
}

TEST(CheckMetricsFlagsTest, DefaultGivenOffAndContradiction) {
  absl::StatusOr<MetricsFlags> flags = CheckMetricsFlags("", false);
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->address->ToString(), "127.0.0.1:7710");
  EXPECT_FALSE(flags->given);
  flags = CheckMetricsFlags("[::]:9999", false);
  ASSERT_TRUE(flags.ok());
  EXPECT_TRUE(flags->given);
  EXPECT_EQ(flags->address->port(), 9999);
  flags = CheckMetricsFlags("", true);
  ASSERT_TRUE(flags.ok());
  EXPECT_FALSE(flags->address.has_value());
  EXPECT_FALSE(CheckMetricsFlags("1.2.3.4:1", true).ok());
  absl::StatusOr<MetricsFlags> bad = CheckMetricsFlags("localhost:7710", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--metrics-address"));
}

// docs/metrics.md lists every agent metric exactly: the names in its tables are the families
// the agent renders from a status with every part present.
TEST(AgentMetricsTest, DocsListEveryMetric) {
  std::ifstream file(std::string(TM_SOURCE_DIR) + "/docs/metrics.md");
  ASSERT_TRUE(file.good()) << "docs/metrics.md is missing";
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string docs = buffer.str();
  std::set<std::string> documented;
  const std::regex row("\\| `(tunnelmesh_agent_[a-z_]+)`");
  for (auto it = std::sregex_iterator(docs.begin(), docs.end(), row); it != std::sregex_iterator();
       ++it) {
    documented.insert((*it)[1]);
  }
  std::set<std::string> exported;
  const std::string text = RenderAgentMetrics(FullStatus(), Extras(), kNow);
  const std::regex type_line("# TYPE (tunnelmesh_agent_[a-z_]+) ");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), type_line);
       it != std::sregex_iterator(); ++it) {
    exported.insert((*it)[1]);
  }
  EXPECT_EQ(documented, exported);
}

}  // namespace
}  // namespace tunnelmesh
