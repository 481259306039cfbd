#include "operator/reconcilers/controller.h"

#include <pthread.h>

#include <chrono>

#include "lib/base/log.h"
#include "operator/kube/object.h"

namespace tunnelmesh {

kube::Informer::Handlers EnqueueHandlers(kube::WorkQueue* queue,
                                         std::function<std::vector<std::string>()> extra) {
  kube::Informer::Handlers h;
  h.on_upsert = [queue](const nlohmann::json& object) { queue->Add(kube::ObjectKey(object)); };
  h.on_delete = [queue](const nlohmann::json& object) { queue->Add(kube::ObjectKey(object)); };
  h.on_synced = [queue, extra = std::move(extra)] {
    if (!extra) return;
    for (const std::string& key : extra()) queue->Add(key);
  };
  return h;
}

void EnqueueAll(const kube::Informer& informer, kube::WorkQueue* queue) {
  for (const nlohmann::json& object : informer.Snapshot()) queue->Add(kube::ObjectKey(object));
}

Controller::Controller(std::string name, kube::WorkQueue* queue, Reconciler* reconciler)
    : name_(std::move(name)), queue_(queue), reconciler_(reconciler) {}

Controller::~Controller() { Stop(); }

void Controller::Start() {
  if (worker_.joinable()) return;
  worker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tm-reconcile");
    while (!stopping_.load(std::memory_order_acquire)) ProcessOne(absl::Seconds(1));
  });
}

void Controller::Stop() {
  stopping_.store(true, std::memory_order_release);
  queue_->ShutDown();
  if (worker_.joinable()) worker_.join();
}

int Controller::RunUntilIdle() {
  int n = 0;
  while (ProcessOne(absl::ZeroDuration())) ++n;
  return n;
}

bool Controller::ProcessOne(absl::Duration wait) {
  std::optional<std::string> key = queue_->Get(wait);
  if (!key) return false;
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<Result> result = reconciler_->Reconcile(*key);
  stats_.seconds.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  (result.ok() ? stats_.succeeded : stats_.failed).fetch_add(1, std::memory_order_relaxed);
  queue_->Done(*key);
  if (!result.ok()) {
    TM_LOG_WARN("reconcile {} {}: {} (retried with backoff)", name_, *key,
                std::string(result.status().message()));
    queue_->AddRateLimited(*key);
    return true;
  }
  queue_->Forget(*key);
  if (result->requeue_after > absl::ZeroDuration()) queue_->AddAfter(*key, result->requeue_after);
  return true;
}

}  // namespace tunnelmesh
