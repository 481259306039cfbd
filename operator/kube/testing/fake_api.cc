#include "operator/kube/testing/fake_api.h"

#include <set>

#include "absl/strings/str_split.h"
#include "operator/kube/conditions.h"

namespace tunnelmesh::kube::testing {
namespace {

bool HasStatusSubresource(const Resource& resource) {
  static const std::set<std::string> kWithStatus = {"meshes", "meshpeers", "peerpolicies", "nodes"};
  return kWithStatus.contains(resource.plural);
}

std::string What(const std::string& verb, const Resource& resource, const std::string& ns,
                 const std::string& name) {
  return verb + " " + ResourcePath(resource, ns, name);
}

// What a generation counts: everything but metadata and status.
nlohmann::json SpecPart(const nlohmann::json& object) {
  nlohmann::json spec = object.is_object() ? object : nlohmann::json::object();
  spec.erase("metadata");
  spec.erase("status");
  spec.erase("apiVersion");
  spec.erase("kind");
  return spec;
}

bool HasFinalizers(const nlohmann::json& object) {
  const auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return false;
  const auto finalizers = metadata->find("finalizers");
  return finalizers != metadata->end() && finalizers->is_array() && !finalizers->empty();
}

bool BeingDeleted(const nlohmann::json& object) {
  return !MetadataString(object, "deletionTimestamp").empty();
}

// Equality-based selectors only ("a=b,c==d"); an empty selector matches everything.
bool Matches(const nlohmann::json& object, const std::string& selector) {
  if (selector.empty()) return true;
  const nlohmann::json* labels = nullptr;
  if (object.contains("metadata") && object["metadata"].is_object() &&
      object["metadata"].contains("labels")) {
    labels = &object["metadata"]["labels"];
  }
  for (absl::string_view term : absl::StrSplit(selector, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(term, absl::MaxSplits('=', 1));
    if (kv.size() != 2) return false;
    std::string value = kv[1];
    if (!value.empty() && value[0] == '=') value.erase(0, 1);
    if (labels == nullptr || !labels->is_object() || !labels->contains(kv[0]) ||
        (*labels)[kv[0]] != value) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::Status FakeApi::Enter(const Call& call) {
  absl::Duration latency;
  ErrorRule rule;
  absl::Status failure;
  {
    absl::MutexLock lock(&calls_mu_);
    calls_.push_back(call);
    latency = latency_;
    rule = rule_;
    for (auto it = failures_.begin(); it != failures_.end(); ++it) {
      if (it->verb == call.verb && (it->resource.empty() || it->resource == call.resource)) {
        failure = it->status;
        if (--it->times <= 0) failures_.erase(it);
        break;
      }
    }
  }
  if (latency > absl::ZeroDuration()) absl::SleepFor(latency);
  if (!failure.ok()) return failure;
  if (rule) return rule(call);
  return absl::OkStatus();
}

FakeApi::Key FakeApi::KeyOf(const Resource& resource, const std::string& ns,
                            const std::string& name) const {
  return {resource.plural, resource.namespaced ? ns : "", name};
}

nlohmann::json FakeApi::CommitLocked(const Key& key, nlohmann::json object,
                                     const std::string& type) {
  ++revision_;
  object["metadata"]["resourceVersion"] = std::to_string(revision_);
  if (type == "DELETED") {
    objects_.erase(key);
  } else {
    objects_[key] = object;
  }
  history_.push_back({revision_, std::get<0>(key), std::get<1>(key), {type, object}});
  changed_.SignalAll();
  return object;
}

nlohmann::json FakeApi::ReplaceLocked(const Key& key, const nlohmann::json& old,
                                      nlohmann::json next) {
  // What the server owns stays as it was.
  for (const char* field : {"uid", "creationTimestamp", "deletionTimestamp", "generation"}) {
    if (old["metadata"].contains(field)) {
      next["metadata"][field] = old["metadata"][field];
    } else {
      next["metadata"].erase(field);
    }
  }
  if (SpecPart(next) != SpecPart(old)) {
    next["metadata"]["generation"] = old["metadata"].value("generation", int64_t{0}) + 1;
  }
  if (BeingDeleted(next) && !HasFinalizers(next)) return CommitLocked(key, next, "DELETED");
  return CommitLocked(key, std::move(next), "MODIFIED");
}

absl::StatusOr<nlohmann::json> FakeApi::Get(const Resource& resource, const std::string& ns,
                                            const std::string& name) {
  if (absl::Status s = Enter({"get", resource.plural, ns, name}); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = objects_.find(KeyOf(resource, ns, name));
  if (it == objects_.end()) {
    return absl::NotFoundError(What("GET", resource, ns, name) + ": 404 " + resource.plural +
                               " \"" + name + "\" not found");
  }
  return it->second;
}

absl::StatusOr<nlohmann::json> FakeApi::List(const Resource& resource, const std::string& ns,
                                             const std::string& label_selector,
                                             const std::string& /*field_selector*/) {
  if (absl::Status s = Enter({"list", resource.plural, ns, ""}); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  nlohmann::json items = nlohmann::json::array();
  for (const auto& [key, object] : objects_) {
    if (std::get<0>(key) != resource.plural) continue;
    if (resource.namespaced && !ns.empty() && std::get<1>(key) != ns) continue;
    if (Matches(object, label_selector)) items.push_back(object);
  }
  return nlohmann::json{{"apiVersion", resource.ApiVersion()},
                        {"kind", resource.kind + "List"},
                        {"metadata", {{"resourceVersion", std::to_string(revision_)}}},
                        {"items", std::move(items)}};
}

absl::StatusOr<nlohmann::json> FakeApi::Create(const Resource& resource, const std::string& ns,
                                               const nlohmann::json& object) {
  const std::string object_ns = ns.empty() ? ObjectNamespace(object) : ns;
  CreateHandler handler;
  {
    absl::MutexLock lock(&calls_mu_);
    auto it = create_handlers_.find(resource.plural);
    if (it != create_handlers_.end()) handler = it->second;
  }
  if (absl::Status s = Enter({"create", resource.plural, object_ns, ObjectName(object)}); !s.ok()) {
    return s;
  }
  if (handler) return handler(object);
  if (!object.is_object()) {
    return absl::InvalidArgumentError(What("POST", resource, object_ns, "") + ": not an object");
  }
  nlohmann::json stored = object;
  if (!stored.contains("metadata") || !stored["metadata"].is_object()) {
    stored["metadata"] = nlohmann::json::object();
  }
  absl::MutexLock lock(&mu_);
  std::string name = ObjectName(stored);
  if (name.empty()) {
    const std::string prefix = MetadataString(stored, "generateName");
    if (prefix.empty()) {
      return absl::InvalidArgumentError(What("POST", resource, object_ns, "") +
                                        ": 422 metadata.name: Required value");
    }
    name = prefix + std::to_string(++uids_);
    stored["metadata"]["name"] = name;
  }
  const Key key = KeyOf(resource, object_ns, name);
  if (objects_.contains(key)) {
    return absl::AlreadyExistsError(What("POST", resource, object_ns, "") + ": 409 " +
                                    resource.plural + " \"" + name + "\" already exists");
  }
  if (resource.namespaced) stored["metadata"]["namespace"] = object_ns;
  stored["apiVersion"] = resource.ApiVersion();
  stored["kind"] = resource.kind;
  stored["metadata"]["uid"] = "uid-" + std::to_string(++uids_);
  stored["metadata"]["creationTimestamp"] = NowRfc3339();
  stored["metadata"]["generation"] = 1;
  stored["metadata"].erase("deletionTimestamp");
  if (HasStatusSubresource(resource)) stored.erase("status");
  return CommitLocked(key, std::move(stored), "ADDED");
}

absl::StatusOr<nlohmann::json> FakeApi::Update(const Resource& resource, const std::string& ns,
                                               const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  if (absl::Status s = Enter({"update", resource.plural, ns, name}); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const Key key = KeyOf(resource, ns.empty() ? ObjectNamespace(object) : ns, name);
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(What("PUT", resource, ns, name) + ": 404 not found");
  }
  const std::string rv = MetadataString(object, "resourceVersion");
  if (!rv.empty() && rv != MetadataString(it->second, "resourceVersion")) {
    return absl::AbortedError(What("PUT", resource, ns, name) +
                              ": 409 the object has been modified; please apply your changes to "
                              "the latest version and try again");
  }
  nlohmann::json next = object;
  if (HasStatusSubresource(resource)) {
    next.erase("status");
    if (it->second.contains("status")) next["status"] = it->second["status"];
  }
  const nlohmann::json old = it->second;
  return ReplaceLocked(key, old, std::move(next));
}

absl::StatusOr<nlohmann::json> FakeApi::UpdateStatus(const Resource& resource,
                                                     const std::string& ns,
                                                     const nlohmann::json& object) {
  const std::string name = ObjectName(object);
  if (absl::Status s = Enter({"updatestatus", resource.plural, ns, name, true}); !s.ok()) {
    return s;
  }
  absl::MutexLock lock(&mu_);
  const Key key = KeyOf(resource, ns.empty() ? ObjectNamespace(object) : ns, name);
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(What("PUT", resource, ns, name + "/status") + ": 404 not found");
  }
  const std::string rv = MetadataString(object, "resourceVersion");
  if (!rv.empty() && rv != MetadataString(it->second, "resourceVersion")) {
    return absl::AbortedError(What("PUT", resource, ns, name + "/status") +
                              ": 409 the object has been modified");
  }
  const nlohmann::json old = it->second;
  nlohmann::json next = old;
  if (object.contains("status")) {
    next["status"] = object["status"];
  } else {
    next.erase("status");
  }
  return ReplaceLocked(key, old, std::move(next));
}

absl::StatusOr<nlohmann::json> FakeApi::Patch(const Resource& resource, const std::string& ns,
                                              const std::string& name, const nlohmann::json& patch,
                                              PatchType type, bool status_subresource) {
  if (absl::Status s = Enter({"patch", resource.plural, ns, name, status_subresource}); !s.ok()) {
    return s;
  }
  const std::string what = What("PATCH", resource, ns, name);
  absl::MutexLock lock(&mu_);
  const Key key = KeyOf(resource, ns, name);
  auto it = objects_.find(key);
  if (it == objects_.end()) return absl::NotFoundError(what + ": 404 not found");
  const nlohmann::json old = it->second;
  nlohmann::json next = old;
  if (type == PatchType::kJson) {
    if (!patch.is_array()) return absl::InvalidArgumentError(what + ": a JSON patch is an array");
    try {
      next = old.patch(patch);
    } catch (const nlohmann::json::exception& e) {
      // The API server answers a failed "test" (and any patch it cannot apply) with 422.
      return absl::InvalidArgumentError(what + ": 422 " + e.what());
    }
  } else {
    if (!patch.is_object()) return absl::InvalidArgumentError(what + ": 400 not an object");
    next.merge_patch(patch);
  }
  if (!next.is_object() || !next.contains("metadata") || !next["metadata"].is_object()) {
    return absl::InvalidArgumentError(what + ": 422 the patch removed metadata");
  }
  if (HasStatusSubresource(resource)) {
    // A status patch changes only the status; any other patch everything but the status.
    nlohmann::json merged = status_subresource ? old : next;
    merged.erase("status");
    const nlohmann::json& source = status_subresource ? next : old;
    if (source.contains("status")) merged["status"] = source["status"];
    next = std::move(merged);
  }
  next["metadata"]["name"] = name;
  const std::string rv = MetadataString(next, "resourceVersion");
  if (!rv.empty() && rv != MetadataString(old, "resourceVersion")) {
    return absl::AbortedError(what + ": 409 the object has been modified");
  }
  return ReplaceLocked(key, old, std::move(next));
}

absl::Status FakeApi::Delete(const Resource& resource, const std::string& ns,
                             const std::string& name, const std::string& uid_precondition) {
  if (absl::Status s = Enter({"delete", resource.plural, ns, name}); !s.ok()) return s;
  const std::string what = What("DELETE", resource, ns, name);
  absl::MutexLock lock(&mu_);
  const Key key = KeyOf(resource, ns, name);
  auto it = objects_.find(key);
  if (it == objects_.end()) return absl::NotFoundError(what + ": 404 not found");
  if (!uid_precondition.empty() && MetadataString(it->second, "uid") != uid_precondition) {
    return absl::AbortedError(
        what + ": 409 Precondition failed: UID in precondition: " + uid_precondition +
        ", UID in object meta: " + MetadataString(it->second, "uid"));
  }
  nlohmann::json object = it->second;
  if (HasFinalizers(object)) {
    if (BeingDeleted(object)) return absl::OkStatus();
    object["metadata"]["deletionTimestamp"] = NowRfc3339();
    CommitLocked(key, std::move(object), "MODIFIED");
    return absl::OkStatus();
  }
  CommitLocked(key, std::move(object), "DELETED");
  return absl::OkStatus();
}

absl::Status FakeApi::Watch(const Resource& resource, const std::string& ns,
                            const std::string& resource_version, int timeout_seconds,
                            const std::function<bool(const WatchEvent&)>& on_event,
                            const std::atomic<bool>* stop, const std::string& label_selector) {
  if (absl::Status s = Enter({"watch", resource.plural, ns, ""}); !s.ok()) return s;
  const std::string what = What("WATCH", resource, ns, "");
  const absl::Time deadline = absl::Now() + absl::Seconds(timeout_seconds);
  const bool all_namespaces = !resource.namespaced || ns.empty();
  auto relevant = [&](const std::string& plural, const std::string& object_ns,
                      const nlohmann::json& object) {
    return plural == resource.plural && (all_namespaces || object_ns == ns) &&
           Matches(object, label_selector);
  };
  std::vector<WatchEvent> batch;
  size_t cursor = 0;  // index into history_
  uint64_t epoch;
  {
    absl::MutexLock lock(&mu_);
    epoch = watch_epoch_;
    ++watchers_;
    if (resource_version.empty() || resource_version == "0") {
      for (const auto& [key, object] : objects_) {
        if (relevant(std::get<0>(key), std::get<1>(key), object)) {
          batch.push_back({"ADDED", object});
        }
      }
      cursor = history_.size();
    } else {
      uint64_t from = 0;
      try {
        from = std::stoull(resource_version);
      } catch (...) {
        --watchers_;
        return absl::InvalidArgumentError(what + ": 400 resourceVersion \"" + resource_version +
                                          "\" is not a number");
      }
      if (from + 1 < compacted_) {
        --watchers_;
        return absl::OutOfRangeError(what + ": 410 too old resource version: " + resource_version);
      }
      while (cursor < history_.size() && history_[cursor].revision <= from) ++cursor;
    }
  }
  absl::Status result = absl::OkStatus();
  auto deliver = [&] {
    for (const WatchEvent& event : batch) {
      if (!on_event(event)) return false;
    }
    batch.clear();
    return true;
  };
  while (deliver()) {
    if (stop != nullptr && stop->load()) {
      result = absl::CancelledError(what + ": stopped");
      break;
    }
    if (absl::Now() >= deadline) break;
    absl::MutexLock lock(&mu_);
    if (cursor >= history_.size() && watch_epoch_ == epoch) {
      changed_.WaitWithTimeout(&mu_, std::min(absl::Milliseconds(50), deadline - absl::Now()));
    }
    if (watch_epoch_ != epoch) break;
    for (; cursor < history_.size(); ++cursor) {
      const HistoryEvent& h = history_[cursor];
      if (relevant(h.resource, h.ns, h.event.object)) batch.push_back(h.event);
    }
  }
  absl::MutexLock lock(&mu_);
  --watchers_;
  return result;
}

void FakeApi::FailNext(std::string verb, std::string resource, absl::Status status, int times) {
  absl::MutexLock lock(&calls_mu_);
  failures_.push_back({std::move(verb), std::move(resource), std::move(status), times});
}

void FakeApi::SetErrorRule(ErrorRule rule) {
  absl::MutexLock lock(&calls_mu_);
  rule_ = std::move(rule);
}

void FakeApi::SetLatency(absl::Duration latency) {
  absl::MutexLock lock(&calls_mu_);
  latency_ = latency;
}

void FakeApi::SetCreateHandler(std::string resource, CreateHandler handler) {
  absl::MutexLock lock(&calls_mu_);
  create_handlers_[std::move(resource)] = std::move(handler);
}

void FakeApi::Compact() {
  absl::MutexLock lock(&mu_);
  history_.clear();
  compacted_ = revision_ + 1;
}

void FakeApi::EndWatches() {
  absl::MutexLock lock(&mu_);
  ++watch_epoch_;
  changed_.SignalAll();
}

std::vector<FakeApi::Call> FakeApi::calls() const {
  absl::MutexLock lock(&calls_mu_);
  return calls_;
}

int FakeApi::CallCount(const std::string& verb, const std::string& resource) const {
  absl::MutexLock lock(&calls_mu_);
  int n = 0;
  for (const Call& c : calls_) {
    if (c.verb == verb && (resource.empty() || c.resource == resource)) ++n;
  }
  return n;
}

void FakeApi::ClearCalls() {
  absl::MutexLock lock(&calls_mu_);
  calls_.clear();
}

uint64_t FakeApi::revision() const {
  absl::MutexLock lock(&mu_);
  return revision_;
}

int FakeApi::watchers() const {
  absl::MutexLock lock(&mu_);
  return watchers_;
}

}  // namespace tunnelmesh::kube::testing
