#include "lib/metrics/exposition.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace tunnelmesh::metrics {
namespace {

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

void AppendLabels(const Labels& labels, const std::pair<std::string, std::string>* extra,
                  std::string* out) {
  if (labels.empty() && extra == nullptr) return;
  out->push_back('{');
  bool first = true;
  auto append = [&](const std::pair<std::string, std::string>& label) {
    if (!first) out->push_back(',');
    first = false;
    out->append(label.first);
    out->append("=\"");
    out->append(EscapeLabelValue(label.second));
    out->push_back('"');
  };
  for (const auto& label : labels) append(label);
  if (extra != nullptr) append(*extra);
  out->push_back('}');
}

const char* TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || !(IsNameStart(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return IsNameChar(c) || c == ':'; });
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0]) || name.substr(0, 2) == "__") return false;
  return std::all_of(name.begin(), name.end(), IsNameChar);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (value == std::trunc(value) && std::fabs(value) < 9.007199254740992e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", value);
    return buf;
  }
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_([&] {
        std::vector<double> kept;
        for (double b : upper_bounds) {
          if (std::isfinite(b) && (kept.empty() || b > kept.back())) kept.push_back(b);
        }
        return kept;
      }()),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  // NaN lands in +Inf (no bound is >= it); the sum then reads NaN, as Prometheus clients do.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    if (i < bounds_.size()) s.cumulative.push_back(running);
  }
  s.cumulative.push_back(running);
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

Family::Family(std::string name, Type type, std::string help, Exposition* owner)
    : name_(std::move(name)), type_(type), help_(std::move(help)), owner_(owner) {}

bool Family::Refuse() {
  ++owner_->dropped_series_;
  return false;
}

bool Family::Admit(const Labels& labels) {
  bool ok = this != owner_->refused_.get() && samples_.size() < owner_->max_series_;
  for (const auto& label : labels) {
    // "le" is the histogram's own label.
    ok = ok && IsValidLabelName(label.first) && !(type_ == Type::kHistogram && label.first == "le");
  }
  if (!ok) ++owner_->dropped_series_;
  return ok;
}

bool Family::Add(const Labels& labels, double value) {
  if (type_ == Type::kHistogram) return Refuse();
  if (!Admit(labels)) return false;
  samples_.push_back({labels, value, 0, false, {}});
  return true;
}

bool Family::AddCount(const Labels& labels, uint64_t value) {
  if (type_ == Type::kHistogram) return Refuse();
  if (!Admit(labels)) return false;
  samples_.push_back({labels, 0, value, true, {}});
  return true;
}

bool Family::AddHistogram(const Labels& labels, const Histogram::Snapshot& snapshot) {
  if (type_ != Type::kHistogram) return Refuse();
  if (!Admit(labels)) return false;
  samples_.push_back({labels, 0, 0, false, snapshot});
  return true;
}

void Family::Render(std::string* out) const {
  if (samples_.empty()) return;
  const std::string sample_name = type_ == Type::kCounter ? name_ + "_total" : name_;
  out->append("# HELP " + sample_name + " " + EscapeHelp(help_) + "\n");
  out->append("# TYPE " + sample_name + " " + TypeName(type_) + "\n");
  for (const Sample& sample : samples_) {
    if (type_ != Type::kHistogram) {
      out->append(sample_name);
      AppendLabels(sample.labels, nullptr, out);
      out->push_back(' ');
      out->append(sample.exact ? std::to_string(sample.count) : FormatValue(sample.value));
      out->push_back('\n');
      continue;
    }
    const Histogram::Snapshot& h = sample.histogram;
    for (size_t i = 0; i < h.cumulative.size(); ++i) {
      const std::pair<std::string, std::string> le{
          "le", i < h.upper_bounds.size() ? FormatValue(h.upper_bounds[i]) : "+Inf"};
      out->append(name_ + "_bucket");
      AppendLabels(sample.labels, &le, out);
      out->append(" " + std::to_string(h.cumulative[i]) + "\n");
    }
    out->append(name_ + "_sum");
    AppendLabels(sample.labels, nullptr, out);
    out->append(" " + FormatValue(h.sum) + "\n");
    out->append(name_ + "_count");
    AppendLabels(sample.labels, nullptr, out);
    out->append(" " + std::to_string(h.count) + "\n");
  }
}

Family& Exposition::Counter(std::string_view name, std::string_view help) {
  return Get(name, Type::kCounter, help);
}
Family& Exposition::Gauge(std::string_view name, std::string_view help) {
  return Get(name, Type::kGauge, help);
}
Family& Exposition::Histogram(std::string_view name, std::string_view help) {
  return Get(name, Type::kHistogram, help);
}

Family& Exposition::Get(std::string_view name, Type type, std::string_view help) {
  for (const std::unique_ptr<Family>& family : families_) {
    if (family->name() != name) continue;
    if (family->type() == type) return *family;
    break;
  }
  const bool clash = std::any_of(families_.begin(), families_.end(),
                                 [&](const auto& f) { return f->name() == name; });
  if (clash || !IsValidMetricName(name)) {
    if (refused_ == nullptr) {
      refused_.reset(new Family("", Type::kGauge, "", this));
    }
    return *refused_;
  }
  families_.push_back(
      std::unique_ptr<Family>(new Family(std::string(name), type, std::string(help), this)));
  return *families_.back();
}

std::string Exposition::Text() const {
  std::string out;
  for (const std::unique_ptr<Family>& family : families_) family->Render(&out);
  return out;
}

std::vector<std::string> Exposition::FamilyNames() const {
  std::vector<std::string> names;
  for (const std::unique_ptr<Family>& family : families_) {
    if (family->series() == 0) continue;
    names.push_back(family->type() == Type::kCounter ? family->name() + "_total" : family->name());
  }
  return names;
}

}  // namespace tunnelmesh::metrics
