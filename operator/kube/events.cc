#include "operator/kube/events.h"

#include <pthread.h>

#include <cinttypes>
#include <cstdio>
#include <utility>

#include "absl/strings/match.h"
#include "lib/base/log.h"
#include "operator/kube/conditions.h"

namespace tunnelmesh::kube {

EventRecorder::EventRecorder(Api* client, std::string component, std::string ns)
    : client_(client),
      component_(std::move(component)),
      cluster_scoped_ns_(ns.empty() ? "default" : std::move(ns)) {
  worker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tm-events");
    Run();
  });
}

EventRecorder::~EventRecorder() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  worker_.join();
}

void EventRecorder::Normal(const nlohmann::json& object, const std::string& reason,
                           const std::string& message) {
  Enqueue(object, "Normal", reason, message);
}

void EventRecorder::Warning(const nlohmann::json& object, const std::string& reason,
                            const std::string& message) {
  Enqueue(object, "Warning", reason, message);
}

void EventRecorder::Enqueue(const nlohmann::json& object, const char* type,
                            const std::string& reason, const std::string& message) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= kMaxQueued) {
    counters_.dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queue_.push_back(Pending{object, type, reason, message, absl::Now()});
}

void EventRecorder::Flush() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !writing_; };
  mu_.Await(absl::Condition(&idle));
}

void EventRecorder::Run() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
  while (true) {
    Pending pending;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything is written
      pending = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
    }
    Write(pending);
    absl::MutexLock lock(&mu_);
    writing_ = false;
  }
}

std::string EventRecorder::EventNamespace(const nlohmann::json& object) const {
  const std::string object_ns = MetadataString(object, "namespace");
  if (!object_ns.empty()) return object_ns;
  return cluster_scoped_ns_;
}

void EventRecorder::Write(const Pending& pending) {
  const std::string uid = MetadataString(pending.object, "uid");
  const std::string name = MetadataString(pending.object, "name");
  const std::string key =
      uid + '\0' + pending.type + '\0' + pending.reason + '\0' + pending.message;
  const std::string at = FormatRfc3339(pending.at);

  // Forget repeats older than the window (the map stays small).
  for (auto it = recent_.begin(); it != recent_.end();) {
    it = pending.at - it->second.last > kRepeatWindow ? recent_.erase(it) : std::next(it);
  }
  if (auto it = recent_.find(key); it != recent_.end()) {
    Recent& recent = it->second;
    const nlohmann::json patch = {{"count", recent.count + 1}, {"lastTimestamp", at}};
    absl::StatusOr<nlohmann::json> patched =
        client_->Patch(kEvents, recent.ns, recent.name, patch, PatchType::kMerge);
    if (patched.ok()) {
      recent.count += 1;
      recent.last = pending.at;
      counters_.bumped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (!absl::IsNotFound(patched.status())) {
      counters_.failed.fetch_add(1, std::memory_order_relaxed);
      TM_LOG_WARN("event not recorded reason={} object={} error={}", pending.reason, name,
                  patched.status().ToString());
      return;
    }
    recent_.erase(it);  // the Event expired (TTL) meanwhile: create a new one
  }

  nlohmann::json involved = {
      {"apiVersion", StringAt(pending.object, "apiVersion")},
      {"kind", StringAt(pending.object, "kind")},
      {"name", name},
      {"uid", uid},
      {"resourceVersion", MetadataString(pending.object, "resourceVersion")}};
  const std::string object_ns = MetadataString(pending.object, "namespace");
  if (!object_ns.empty()) involved["namespace"] = object_ns;
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".%" PRIx64,
                static_cast<uint64_t>(absl::ToUnixNanos(pending.at)));
  std::string event_ns = EventNamespace(pending.object);
  nlohmann::json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"name", (name.empty() ? "unnamed" : name) + suffix}, {"namespace", event_ns}}},
      {"involvedObject", std::move(involved)},
      {"reason", pending.reason},
      {"message", pending.message},
      {"type", pending.type},
      {"source", {{"component", component_}}},
      {"reportingComponent", component_},
      {"firstTimestamp", at},
      {"lastTimestamp", at},
      {"count", 1}};
  absl::StatusOr<nlohmann::json> created = client_->Create(kEvents, event_ns, event);
  if (object_ns.empty() && event_ns != "default" &&
      created.status().code() == absl::StatusCode::kInvalidArgument &&
      absl::StrContains(created.status().message(), "involvedObject.namespace")) {
    // The server allows events about cluster-scoped objects only in "default" (core/v1 Events
    // without eventTime); use it from now on.
    TM_LOG_INFO("events about cluster-scoped objects go to namespace default, not {}", event_ns);
    cluster_scoped_ns_ = event_ns = "default";
    event["metadata"]["namespace"] = event_ns;
    created = client_->Create(kEvents, event_ns, event);
  }
  if (!created.ok()) {
    counters_.failed.fetch_add(1, std::memory_order_relaxed);
    TM_LOG_WARN("event not recorded reason={} object={} error={}", pending.reason, name,
                created.status().ToString());
    return;
  }
  counters_.created.fetch_add(1, std::memory_order_relaxed);
  recent_[key] = Recent{event_ns, ObjectName(*created), 1, pending.at};
}

}  // namespace tunnelmesh::kube
