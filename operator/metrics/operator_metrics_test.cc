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

}  // namespace
}  // namespace tunnelmesh
