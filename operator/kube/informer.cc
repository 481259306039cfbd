#include "operator/kube/informer.h"

#include <pthread.h>

#include <algorithm>
#include <random>
#include <utility>

#include "lib/base/backoff.h"
#include "lib/base/log.h"

namespace tunnelmesh::kube {

namespace {

std::string Key(const std::string& ns, const std::string& name) { return ns + "/" + name; }

std::string Key(const nlohmann::json& object) {
  return Key(ObjectNamespace(object), ObjectName(object));
}

}  // namespace

Informer::Informer(Api* client, Resource resource, Handlers handlers, Options options)
    : client_(client),
      resource_(std::move(resource)),
      handlers_(std::move(handlers)),
      options_(std::move(options)) {}

Informer::~Informer() { Stop(); }

void Informer::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tm-informer");
    Run();
  });
}

void Informer::Stop() {
  {
    absl::MutexLock lock(&sleep_mu_);
    stop_.store(true, std::memory_order_release);
  }
  if (thread_.joinable()) thread_.join();
}

bool Informer::HasSynced() const { return synced_.load(std::memory_order_acquire); }

std::vector<nlohmann::json> Informer::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<nlohmann::json> out;
  out.reserve(cache_.size());
  for (const auto& [key, object] : cache_) out.push_back(object);
  return out;
}

std::optional<nlohmann::json> Informer::Find(const std::string& ns, const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = cache_.find(Key(resource_.namespaced ? ns : "", name));
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

std::string Informer::resource_version() const {
  absl::MutexLock lock(&mu_);
  return resource_version_;
}

bool Informer::Sleep(absl::Duration delay) {
  absl::MutexLock lock(&sleep_mu_);
  auto stopped = [this] { return stop_.load(std::memory_order_acquire); };
  return !sleep_mu_.AwaitWithTimeout(absl::Condition(&stopped), delay);
}

void Informer::NoteError(const absl::Status& status) {
  counters_.errors.fetch_add(1, std::memory_order_relaxed);
  const std::string text = status.ToString();
  if (text != last_error_) {
    TM_LOG_WARN("informer error resource={} error={}", resource_.plural, text);
    last_error_ = text;
  } else {
    TM_LOG_DEBUG("informer error again resource={} error={}", resource_.plural, text);
  }
}

void Informer::Run() {
  // Jitter of +-50% so that informers that lost one API server do not come back in lockstep.
  Backoff backoff(absl::ToChronoMilliseconds(options_.min_backoff),
                  absl::ToChronoMilliseconds(options_.max_backoff), std::random_device{}(),
                  /*jitter=*/0.5);
  bool need_list = true;
  absl::Time relist_at = absl::InfiniteFuture();
  while (!stop_.load(std::memory_order_acquire)) {
    absl::Status status;
    if (need_list) {
      status = ListOnce();
      if (status.ok()) {
        need_list = false;
        relist_at = options_.resync > absl::ZeroDuration() ? absl::Now() + options_.resync
                                                           : absl::InfiniteFuture();
      }
    } else {
      status = WatchOnce(relist_at);
      if (status.ok()) {
        if (absl::Now() >= relist_at) {
          need_list = true;
        } else {
          counters_.watch_restarts.fetch_add(1, std::memory_order_relaxed);
        }
      } else if (IsGone(status)) {
        TM_LOG_INFO("informer relisting after 410 Gone resource={} detail={}", resource_.plural,
                    status.ToString());
        counters_.relists_after_gone.fetch_add(1, std::memory_order_relaxed);
        need_list = true;
        continue;
      }
    }
    if (status.code() == absl::StatusCode::kCancelled) break;
    if (status.ok()) {
      backoff.Reset();
      if (!last_error_.empty()) {
        TM_LOG_INFO("informer recovered resource={}", resource_.plural);
        last_error_.clear();
      }
      continue;
    }
    NoteError(status);
    if (!Sleep(absl::FromChrono(backoff.Next()))) break;
  }
}

absl::Status Informer::ListOnce() {
  absl::StatusOr<nlohmann::json> list =
      client_->List(resource_, options_.ns, options_.label_selector);
  if (!list.ok()) return list.status();
  std::map<std::string, nlohmann::json> fresh;
  for (nlohmann::json& item : (*list)["items"]) {
    // List items carry no kind/apiVersion; handlers expect whole objects.
    item["kind"] = resource_.kind;
    item["apiVersion"] = resource_.ApiVersion();
    std::string key = Key(item);
    fresh.emplace(std::move(key), std::move(item));
  }
  std::vector<nlohmann::json> vanished;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, object] : cache_) {
      if (!fresh.contains(key)) vanished.push_back(std::move(object));
    }
    cache_ = fresh;
    resource_version_ = MetadataString(*list, "resourceVersion");
  }
  counters_.lists.fetch_add(1, std::memory_order_relaxed);
  for (const nlohmann::json& object : vanished) {
    if (handlers_.on_delete) handlers_.on_delete(object);
  }
  for (const auto& [key, object] : fresh) {
    if (handlers_.on_upsert) handlers_.on_upsert(object);
  }
  synced_.store(true, std::memory_order_release);
  if (handlers_.on_synced) handlers_.on_synced();
  return absl::OkStatus();
}

absl::Status Informer::WatchOnce(absl::Time relist_at) {
  int timeout = options_.watch_timeout_seconds;
  if (relist_at != absl::InfiniteFuture()) {
    const int64_t until_relist = absl::ToInt64Seconds(relist_at - absl::Now()) + 1;
    timeout = static_cast<int>(std::clamp<int64_t>(until_relist, 1, timeout));
  }
  return client_->Watch(
      resource_, options_.ns, resource_version(), timeout,
      [this, relist_at](const WatchEvent& event) {
        ApplyEvent(event);
        return absl::Now() < relist_at;
      },
      &stop_, options_.label_selector);
}

void Informer::ApplyEvent(const WatchEvent& event) {
  const std::string rv = MetadataString(event.object, "resourceVersion");
  if (event.type == "BOOKMARK") {
    if (!rv.empty()) {
      absl::MutexLock lock(&mu_);
      resource_version_ = rv;
    }
    return;
  }
  counters_.events.fetch_add(1, std::memory_order_relaxed);
  const std::string key = Key(event.object);
  {
    absl::MutexLock lock(&mu_);
    if (!rv.empty()) resource_version_ = rv;
    if (event.type == "DELETED") {
      cache_.erase(key);
    } else {
      cache_[key] = event.object;
    }
  }
  if (event.type == "DELETED") {
    if (handlers_.on_delete) handlers_.on_delete(event.object);
  } else if (handlers_.on_upsert) {
    handlers_.on_upsert(event.object);
  }
}

}  // namespace tunnelmesh::kube
