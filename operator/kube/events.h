// Records core/v1 Events about objects, as `kubectl describe` shows them. Best effort: Normal()
// and Warning() only queue the event and return at once; a thread of the recorder writes it.
// Failures are logged and counted. A repeat of an identical event (same object uid, type, reason
// and message) within 10 minutes bumps count and lastTimestamp of the earlier Event by PATCH
// instead of creating another.
//
// Where events go: an object's own namespace. Events about cluster-scoped objects go to the
// recorder's namespace if the API server takes them there; servers up to at least 1.20 accept
// them only in "default" (core/v1 Events without eventTime), and the recorder then switches to
// "default" for good, as client-go's recorder always does. kubectl describe finds them there.
//
// Threads: Normal(), Warning(), Flush() and counters() from any thread. The recorder's worker
// thread owns recent_ and cluster_scoped_ns_ and is the only one calling the API; mu_ guards the
// queue and the worker's state, and is never held during an API call.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/kube/api.h"

namespace tunnelmesh::kube {

struct EventRecorderCounters {
  std::atomic<uint64_t> created{0};  // new Event objects
  std::atomic<uint64_t> bumped{0};   // repeats folded into an earlier Event
  std::atomic<uint64_t> failed{0};   // writes the API server refused or that did not reach it
  std::atomic<uint64_t> dropped{0};  // queue full
};

class EventRecorder {
 public:
  // `client` must outlive the recorder. `ns`: where events about cluster-scoped objects are
  // written if the server allows it (see above); empty means "default".
  EventRecorder(Api* client, std::string component, std::string ns);
  // Writes what is queued (bounded by the client's request timeout per event), then stops.
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  void Normal(const nlohmann::json& object, const std::string& reason, const std::string& message)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Warning(const nlohmann::json& object, const std::string& reason, const std::string& message)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until everything queued so far is written (or failed). For tests and shutdown.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);
  const EventRecorderCounters& counters() const { return counters_; }

  static constexpr size_t kMaxQueued = 1000;
  static constexpr absl::Duration kRepeatWindow = absl::Minutes(10);

 private:
  struct Pending {
    nlohmann::json object;
    std::string type, reason, message;
    absl::Time at;
  };
  struct Recent {
    std::string ns, name;  // the Event object
    int64_t count = 0;
    absl::Time last;
  };

  void Enqueue(const nlohmann::json& object, const char* type, const std::string& reason,
               const std::string& message) ABSL_LOCKS_EXCLUDED(mu_);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  void Write(const Pending& pending) ABSL_LOCKS_EXCLUDED(mu_);  // worker only
  // The namespace an event about `object` is written to.
  std::string EventNamespace(const nlohmann::json& object) const;

  Api* const client_;
  const std::string component_;
  std::string cluster_scoped_ns_;  // worker only after construction
  EventRecorderCounters counters_;

  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // the worker is writing one it took off queue_
  std::thread worker_;

  std::map<std::string, Recent> recent_;  // worker only; key: uid, type, reason, message
};

}  // namespace tunnelmesh::kube
