#include "operator/coordinator/refused_joins.h"

#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

// The other sources' shared bucket once max_sources are tracked.
constexpr char kOtherSources[] = "(other sources)";

void LogRefusal(const RefusedJoin& e) {
  TM_LOG_WARN("join refused: source={} key={} name=\"{}\" mesh=\"{}\" reason={}: {}", e.source,
              e.key, e.name, e.mesh, absl::StatusCodeToString(e.code), e.reason);
}

void LogSummary(const std::string& source, uint64_t unlogged, absl::Duration window) {
  TM_LOG_WARN(
      "join refused: {} more from {} in the last {} not logged one by one "
      "(tunnelmesh-operator refused lists the latest)",
      unlogged, source, absl::FormatDuration(window));
}

}  // namespace

std::string PrintableText(std::string_view text, size_t max) {
  std::string out;
  for (char c : text.substr(0, max)) {
    out += c >= 0x20 && c < 0x7f ? c : '?';
  }
  if (text.size() > max) out += "...";
  return out;
}

void RefusedJoins::Record(RefusedJoin entry, const std::string& source_key) {
  bool log = false;
  uint64_t ended_unlogged = 0;
  std::string bucket;
  {
    absl::MutexLock lock(&mu_);
    ++total_;
    bucket = source_key;
    if (windows_.count(bucket) == 0 && windows_.size() >= options_.max_sources) {
      bucket = kOtherSources;
    }
    auto [it, fresh] = windows_.try_emplace(bucket, Window{entry.time});
    Window& w = it->second;
    if (!fresh && entry.time - w.start >= options_.window) {
      ended_unlogged = w.unlogged;
      w = Window{entry.time};
    }
    if (w.logged < options_.logged_per_source) {
      ++w.logged;
      log = true;
    } else {
      ++w.unlogged;
      ++unlogged_;
    }
    ring_.push_back(entry);
    while (ring_.size() > options_.capacity) ring_.pop_front();
  }
  if (ended_unlogged > 0) LogSummary(bucket, ended_unlogged, options_.window);
  if (log) LogRefusal(entry);
}

void RefusedJoins::Tick(absl::Time now) {
  std::vector<std::pair<std::string, uint64_t>> summaries;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = windows_.begin(); it != windows_.end();) {
      if (now - it->second.start < options_.window) {
        ++it;
        continue;
      }
      if (it->second.unlogged > 0) summaries.emplace_back(it->first, it->second.unlogged);
      it = windows_.erase(it);
    }
  }
  for (const auto& [source, unlogged] : summaries) LogSummary(source, unlogged, options_.window);
}

std::vector<RefusedJoin> RefusedJoins::Recent() const {
  absl::MutexLock lock(&mu_);
  return {ring_.begin(), ring_.end()};
}

uint64_t RefusedJoins::total() const {
  absl::MutexLock lock(&mu_);
  return total_;
}

uint64_t RefusedJoins::unlogged() const {
  absl::MutexLock lock(&mu_);
  return unlogged_;
}

}  // namespace tunnelmesh
