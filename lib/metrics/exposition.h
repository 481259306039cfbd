// Prometheus text exposition (format version 0.0.4): metric families built at scrape time from
// counters and state the components already keep, rendered as HELP/TYPE lines and samples. The
// library holds no registry of live metrics: each scrape builds an Exposition, adds what it reads,
// and renders it. Names follow the Prometheus conventions the project uses (docs/metrics.md):
// counters are named without `_total` here and rendered with it; values are in base units
// (seconds, bytes).
//
// Bounds: every family holds at most `max_series` label sets; further ones are refused (Add returns
// false) and counted in dropped_series(), so a caller that labels by peer must aggregate beyond its
// own cap rather than grow the output without end.
//
// Histogram (fixed buckets) is the one live type: components observe into it from any thread
// (atomics), and a scrape copies it.
//
// Thread-safety: an Exposition belongs to the thread that builds it. Histogram is thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tunnelmesh::metrics {

enum class Type { kCounter, kGauge, kHistogram };

using Labels = std::vector<std::pair<std::string, std::string>>;

// The content type of the text format, for the HTTP response.
inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. Label names: [a-zA-Z_][a-zA-Z0-9_]*, not starting with
// "__" (reserved by Prometheus).
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

// Escapes a label value: backslash, double quote and newline (the exposition format's rules).
std::string EscapeLabelValue(std::string_view value);
// Escapes a HELP text: backslash and newline.
std::string EscapeHelp(std::string_view help);
// A sample value as the format writes it: integers exactly, NaN, +Inf, -Inf, else the shortest
// decimal that reads back as the same double.
std::string FormatValue(double value);

// A histogram with fixed upper bounds (ascending; +Inf is implicit). Observe from any thread.
class Histogram {
 public:
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // One per bound, then +Inf (== count).
    double sum = 0;
    uint64_t count = 0;
  };

  // Bounds that are not strictly ascending, or not finite, are dropped.
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);
  // A copy for a scrape. Observations racing with it may land in the buckets and not yet in the
  // count; the copy makes the count at least the +Inf bucket, so it stays consistent.
  Snapshot Take() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative.
  std::atomic<double> sum_{0};
};

// Bucket bounds in seconds for latencies from a millisecond to ten seconds.
std::vector<double> LatencyBuckets();

class Exposition;

// One metric family: a name, a type, a help text and its samples.
class Family {
 public:
  // A counter or gauge sample. False (and counted) beyond the series cap, for a label name that
  // is not valid, or on a family of another type.
  bool Add(const Labels& labels, double value);
  bool AddCount(const Labels& labels, uint64_t value);
  // A histogram sample (its _bucket, _sum and _count lines).
  bool AddHistogram(const Labels& labels, const Histogram::Snapshot& snapshot);

  const std::string& name() const { return name_; }
  Type type() const { return type_; }
  size_t series() const { return samples_.size(); }

 private:
  friend class Exposition;
  struct Sample {
    Labels labels;
    double value = 0;
    uint64_t count = 0;
    bool exact = false;  // `count` holds the value.
    Histogram::Snapshot histogram;
  };
  Family(std::string name, Type type, std::string help, Exposition* owner);
  bool Admit(const Labels& labels);
  bool Refuse();  // Counts a refused sample; false.
  void Render(std::string* out) const;

  const std::string name_;
  const Type type_;
  const std::string help_;
  Exposition* const owner_;
  std::vector<Sample> samples_;
};

class Exposition {
 public:
  static constexpr size_t kDefaultMaxSeries = 1000;

  explicit Exposition(size_t max_series = kDefaultMaxSeries) : max_series_(max_series) {}

  // The family `name` (for a counter: without `_total`), created on first use. Asking again for
  // the same name and type returns the same family. An invalid name, or a name already used with
  // another type, returns a family that refuses every sample (counted in dropped_series()).
  Family& Counter(std::string_view name, std::string_view help);
  Family& Gauge(std::string_view name, std::string_view help);
  Family& Histogram(std::string_view name, std::string_view help);

  // Families in the order they were first asked for; families without samples are left out.
  std::string Text() const;
  // Samples refused: over the cap, bad label names, or on a refused family.
  size_t dropped_series() const { return dropped_series_; }
  // The names of the families Text() renders, as their TYPE lines spell them (a counter's with
  // `_total`), in order; for tests and docs checks.
  std::vector<std::string> FamilyNames() const;

 private:
  friend class Family;
  Family& Get(std::string_view name, Type type, std::string_view help);

  const size_t max_series_;
  std::vector<std::unique_ptr<Family>> families_;
  std::unique_ptr<Family> refused_;
  size_t dropped_series_ = 0;
};

}  // namespace tunnelmesh::metrics
