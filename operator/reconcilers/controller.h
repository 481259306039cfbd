// The kubebuilder-style loop around a reconciler: informer events put object keys on a WorkQueue
// (kube/work_queue.h), one worker thread takes them off and calls Reconcile(key), which looks at
// the object as the informer's cache has it now (or at its absence) and brings the world in line.
// Level-triggered: what an event said is never used, only that something about the key changed,
// so a missed or collapsed event does no harm. A failed reconcile is retried with a per-key
// backoff; Result::requeue_after asks for another look later (status that changes without events,
// tokens that rotate).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/metrics/exposition.h"
#include "operator/kube/informer.h"
#include "operator/kube/work_queue.h"

namespace tunnelmesh {

struct Result {
  absl::Duration requeue_after = absl::ZeroDuration();  // zero: only on the next event
};

class Reconciler {
 public:
  virtual ~Reconciler() = default;
  // Makes the world match the object at `key` ("name" for the cluster-scoped kinds here). An
  // error is logged and the key retried with backoff. Called on the controller's worker only.
  [[nodiscard]] virtual absl::StatusOr<Result> Reconcile(const std::string& key) = 0;
};

// Informer handlers that enqueue the key of every object listed, added, changed or deleted;
// after each list also the keys `extra` returns (objects known elsewhere that may be gone).
kube::Informer::Handlers EnqueueHandlers(kube::WorkQueue* queue,
                                         std::function<std::vector<std::string>()> extra = {});
// Enqueues the key of every object in `informer`'s cache.
void EnqueueAll(const kube::Informer& informer, kube::WorkQueue* queue);

// How a controller's reconciles went, for metrics: their durations, and how many succeeded and
// failed. Written by the worker, read from any thread.
struct ReconcileStats {
  metrics::Histogram seconds{metrics::LatencyBuckets()};
  std::atomic<uint64_t> succeeded{0};
  std::atomic<uint64_t> failed{0};
};

class Controller {
 public:
  // `queue` and `reconciler` must outlive the controller.
  Controller(std::string name, kube::WorkQueue* queue, Reconciler* reconciler);
  ~Controller();  // Stop()
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Starts the worker thread.
  void Start();
  // Shuts the queue down and joins the worker (after the reconcile in progress).
  void Stop();
  // Tests: reconciles queued keys on the calling thread (no worker running) until none is ready;
  // the number of reconciles.
  int RunUntilIdle();

  const std::string& name() const { return name_; }
  const ReconcileStats& stats() const { return stats_; }

 private:
  // One key off the queue, reconciled; false when none came within `wait`.
  bool ProcessOne(absl::Duration wait);

  const std::string name_;
  kube::WorkQueue* const queue_;
  Reconciler* const reconciler_;
  std::atomic<bool> stopping_{false};
  ReconcileStats stats_;
  std::thread worker_;
};

}  // namespace tunnelmesh
