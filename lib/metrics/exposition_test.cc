#include "lib/metrics/exposition.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::metrics {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ExpositionTest, CounterGetsTotalSuffixHelpAndType) {
  Exposition e;
  e.Counter("tunnelmesh_test_packets", "Packets seen.").AddCount({{"dir", "rx"}}, 42);
  EXPECT_EQ(e.Text(),
            "# HELP tunnelmesh_test_packets_total Packets seen.\n"
            "# TYPE tunnelmesh_test_packets_total counter\n"
            "tunnelmesh_test_packets_total{dir=\"rx\"} 42\n");
}

TEST(ExpositionTest, GaugeWithoutLabelsAndFractionalValue) {
  Exposition e;
  e.Gauge("tunnelmesh_test_rtt_seconds", "RTT.").Add({}, 0.0125);
  EXPECT_EQ(e.Text(),
            "# HELP tunnelmesh_test_rtt_seconds RTT.\n"
            "# TYPE tunnelmesh_test_rtt_seconds gauge\n"
            "tunnelmesh_test_rtt_seconds 0.0125\n");
}

TEST(ExpositionTest, LabelValuesAreEscaped) {
  Exposition e;
  e.Gauge("g", "h").Add({{"name", "a\\b\"c\nd"}}, 1);
  EXPECT_THAT(e.Text(), HasSubstr("g{name=\"a\\\\b\\\"c\\nd\"} 1\n"));
}

TEST(ExpositionTest, HelpIsEscaped) {
  Exposition e;
  e.Gauge("g", "line one\nback\\slash \"quotes\" stay").Add({}, 1);
  EXPECT_THAT(e.Text(), HasSubstr("# HELP g line one\\nback\\\\slash \"quotes\" stay\n"));
}

TEST(ExpositionTest, Values) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(1e15), "1000000000000000");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
}

TEST(ExpositionTest, LargeCountersAreExact) {
  Exposition e;
  e.Counter("c", "h").AddCount({}, 18446744073709551615ull);
  EXPECT_THAT(e.Text(), HasSubstr("c_total 18446744073709551615\n"));
}

TEST(ExpositionTest, Names) {
  EXPECT_TRUE(IsValidMetricName("tunnelmesh_a:b_1"));
  EXPECT_TRUE(IsValidMetricName(":x"));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("peer"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName("9"));
}

TEST(ExpositionTest, InvalidNamesAndClashesAreRefusedAndCounted) {
  Exposition e;
  EXPECT_FALSE(e.Gauge("bad-name", "h").Add({}, 1));
  EXPECT_FALSE(e.Gauge("g", "h").Add({{"bad-label", "x"}}, 1));
  EXPECT_TRUE(e.Gauge("g", "h").Add({{"ok", "x"}}, 1));
  EXPECT_FALSE(e.Counter("g", "h").AddCount({}, 1));  // Same name, other type.
  EXPECT_FALSE(e.Histogram("hist", "h").Add({}, 1));  // Plain sample on a histogram.
  EXPECT_EQ(e.dropped_series(), 4u);
  EXPECT_EQ(e.Text(), "# HELP g h\n# TYPE g gauge\ng{ok=\"x\"} 1\n");
}

TEST(ExpositionTest, SeriesAreCappedPerFamily) {
  Exposition e(/*max_series=*/3);
  Family& f = e.Gauge("g", "h");
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += f.Add({{"i", std::to_string(i)}}, i) ? 1 : 0;
  EXPECT_EQ(admitted, 3);
  EXPECT_EQ(f.series(), 3u);
  EXPECT_EQ(e.dropped_series(), 7u);
  // Another family has its own budget.
  EXPECT_TRUE(e.Gauge("g2", "h").Add({}, 1));
}

TEST(ExpositionTest, EmptyFamiliesAreLeftOutAndOrderIsKept) {
  Exposition e;
  e.Gauge("b", "h").Add({}, 1);
  e.Gauge("empty", "h");
  e.Counter("a", "h").AddCount({}, 2);
  EXPECT_THAT(e.FamilyNames(), ElementsAre("b", "a_total"));
}

TEST(HistogramTest, BucketsAreCumulativeWithInf) {
  Histogram h({0.1, 1, 10});
  h.Observe(0.05);
  h.Observe(0.1);  // Upper bounds are inclusive.
  h.Observe(5);
  h.Observe(100);
  Exposition e;
  e.Histogram("tunnelmesh_test_latency_seconds", "Latency.").AddHistogram({{"k", "v"}}, h.Take());
  EXPECT_EQ(e.Text(),
            "# HELP tunnelmesh_test_latency_seconds Latency.\n"
            "# TYPE tunnelmesh_test_latency_seconds histogram\n"
            "tunnelmesh_test_latency_seconds_bucket{k=\"v\",le=\"0.1\"} 2\n"
            "tunnelmesh_test_latency_seconds_bucket{k=\"v\",le=\"1\"} 2\n"
            "tunnelmesh_test_latency_seconds_bucket{k=\"v\",le=\"10\"} 3\n"
            "tunnelmesh_test_latency_seconds_bucket{k=\"v\",le=\"+Inf\"} 4\n"
            "tunnelmesh_test_latency_seconds_sum{k=\"v\"} 105.15\n"
            "tunnelmesh_test_latency_seconds_count{k=\"v\"} 4\n");
}

TEST(HistogramTest, UnsortedAndNonFiniteBoundsAreDropped) {
  Histogram h({1, 0.5, 2, std::numeric_limits<double>::infinity(), 2});
  EXPECT_THAT(h.Take().upper_bounds, ElementsAre(1, 2));
}

TEST(HistogramTest, LabelLeIsReservedOnHistograms) {
  Histogram h({1});
  Exposition e;
  EXPECT_FALSE(e.Histogram("h", "h").AddHistogram({{"le", "x"}}, h.Take()));
}

TEST(HistogramTest, ConcurrentObservationsAreAllCounted) {
  Histogram h(LatencyBuckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) h.Observe(0.002);
    });
  }
  for (std::thread& t : threads) t.join();
  const Histogram::Snapshot s = h.Take();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_NEAR(s.sum, 80.0, 1e-6);
  EXPECT_EQ(s.cumulative[0], 0u);      // 0.001
  EXPECT_EQ(s.cumulative[1], 40000u);  // 0.0025
}

}  // namespace
}  // namespace tunnelmesh::metrics
