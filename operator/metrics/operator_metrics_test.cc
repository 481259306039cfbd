#include "operator/metrics/operator_metrics.h"

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class OperatorMetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitCrypto(); }
  OperatorMetricsTest() : store_(*StateStore::Open(TempDir())), coordinator_(store_.get(), {}) {
    coordinator_.SetMeshes(Meshes());
  }
  std::unique_ptr<StateStore> store_;
  Coordinator coordinator_;
};

TEST_F(OperatorMetricsTest, StandbyServesOnlyInfoAndLeader) {
  OperatorMetrics metrics("1.0");
  metrics.Attach({});
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_info{version=\"1.0\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_leader 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("tunnelmesh_operator_members")));
}

TEST_F(OperatorMetricsTest, MembersWatchesRegistrationsRefusalsAndFanout) {
  const PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(coordinator_, Request(a, "a")).ok());
  auto watch = coordinator_.Watch(a);
  ASSERT_TRUE(watch.ok());
  coord::MapUpdate update;
  ASSERT_TRUE((*watch)->Next(&update, absl::Seconds(1)));  // The full map.
  ASSERT_TRUE(RegisterAs(coordinator_, Request(b, "b")).ok());
  ASSERT_TRUE((*watch)->Next(&update, absl::Seconds(1)));  // The delta with b.
  coord::RegisterRequest bad = Request(NewKey(), "x");
  bad.set_public_key("short");
  EXPECT_FALSE(RegisterAs(coordinator_, bad).ok());

  OperatorMetrics metrics("1.0");
  metrics.SetLeader(true);
  OperatorMetricsSources sources;
  sources.coordinator = &coordinator_;
  metrics.Attach(sources);
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_leader 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_members{mesh=\"demo\",kind=\"External\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("tunnelmesh_operator_watch_streams{mesh=\"demo\",kind=\"External\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_registrations_total 2\n"));
  EXPECT_THAT(
      text, HasSubstr("tunnelmesh_operator_registration_refusals_total{reason=\"malformed\"} 1\n"));
  // The full map and the delta, each taken by a's stream.
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_fanout_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_fanout_seconds_bucket{le=\"+Inf\"} 2\n"));
  metrics.Detach();
  EXPECT_THAT(metrics.Render(), Not(HasSubstr("tunnelmesh_operator_members")));
}

TEST_F(OperatorMetricsTest, StunCounters) {
  StunServer::Options options;
  options.port = 0;
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(options);
  ASSERT_TRUE(stun.ok()) << stun.status();
  OperatorMetricsSources sources;
  sources.stun = stun->get();
  const std::string text = RenderOperatorMetrics(sources, true, "1.0");
  EXPECT_THAT(text, HasSubstr("tunnelmesh_operator_stun_requests_total{result=\"answered\"} 0\n"));
}

// Every family the operator renders here is listed in docs/metrics.md (the e2e test metrics.sh
// checks the other direction against a running operator).
TEST_F(OperatorMetricsTest, DocsListEveryRenderedMetric) {
  std::ifstream file(std::string(TM_SOURCE_DIR) + "/docs/metrics.md");
  ASSERT_TRUE(file.good()) << "docs/metrics.md is missing";
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string docs = buffer.str();
  StunServer::Options options;
  options.port = 0;
  absl::StatusOr<std::unique_ptr<StunServer>> stun = StunServer::Start(options);
  ASSERT_TRUE(stun.ok());
  OperatorMetricsSources sources;
  sources.coordinator = &coordinator_;
  sources.stun = stun->get();
  const std::string text = RenderOperatorMetrics(sources, true, "1.0");
  const std::regex type_line("# TYPE (tunnelmesh_operator_[a-z_]+) ");
  int checked = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), type_line);
       it != std::sregex_iterator(); ++it) {
    EXPECT_THAT(docs, HasSubstr("| `" + (*it)[1].str() + "`")) << "not in docs/metrics.md";
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

std::string ReadSourceFile(const std::string& path) {
  std::ifstream file(std::string(TM_SOURCE_DIR) + "/" + path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

// Every query of the chart's Grafana dashboard uses families docs/metrics.md lists (which the
// tests above and e2e/netns/metrics.sh hold to what the binaries export); a histogram's _bucket,
// _sum and _count series count as the histogram.
TEST(DashboardTest, QueriesUseDocumentedMetrics) {
  const std::string docs = ReadSourceFile("docs/metrics.md");
  const std::string text = ReadSourceFile("charts/tunnelmesh/dashboards/tunnelmesh.json");
  ASSERT_FALSE(docs.empty());
  const nlohmann::json dashboard = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << "the dashboard is not JSON";
  ASSERT_TRUE(dashboard.contains("panels"));
  // Every panel but the rows has a title and at least one query.
  int queries = 0;
  for (const nlohmann::json& panel : dashboard["panels"]) {
    EXPECT_FALSE(panel.value("title", std::string()).empty());
    if (panel.value("type", std::string()) == "row") continue;
    ASSERT_TRUE(panel.contains("targets")) << panel.value("title", std::string());
    EXPECT_FALSE(panel["targets"].empty()) << panel.value("title", std::string());
    for (const nlohmann::json& target : panel["targets"]) {
      EXPECT_NE(target.value("expr", std::string()).find("tunnelmesh_"), std::string::npos)
          << panel.value("title", std::string());
      ++queries;
    }
  }
  EXPECT_GE(queries, 20);
  const std::regex name("tunnelmesh_(agent|operator)_[a-z_]+");
  const std::regex histogram_series("_(bucket|sum|count)$");
  std::set<std::string> used;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    used.insert(std::regex_replace((*it)[0].str(), histogram_series, ""));
  }
  EXPECT_GT(used.size(), 20u);
  for (const std::string& metric : used) {
    EXPECT_THAT(docs, HasSubstr("| `" + metric + "` |")) << "the dashboard queries " << metric;
  }
}

}  // namespace
}  // namespace tunnelmesh
